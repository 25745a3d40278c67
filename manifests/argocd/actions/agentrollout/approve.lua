-- Approve the active canary: promptloop.dev/approve-canary = "<proposal>@<prompt sha256>".
-- The operator records it as the proposal's approval (status.approval) and acts at once.
if obj.status == nil or obj.status.canary == nil or obj.status.canary.proposal == nil then
  error("AgentRollout " .. obj.metadata.name .. " has no canary to approve", 0)
end
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["promptloop.dev/approve-canary"] = obj.status.canary.proposal .. "@" .. obj.status.canary.promptDigest
return obj
