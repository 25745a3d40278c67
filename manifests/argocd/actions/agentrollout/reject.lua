-- Reject the active canary: promptloop.dev/reject-canary = "<proposal>@<prompt sha256>".
-- The operator rolls the challenger back at once and the proposal ends Rejected.
if obj.status == nil or obj.status.canary == nil or obj.status.canary.proposal == nil then
  error("AgentRollout " .. obj.metadata.name .. " has no canary to reject", 0)
end
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["promptloop.dev/reject-canary"] = obj.status.canary.proposal .. "@" .. obj.status.canary.promptDigest
return obj
