-- Reject: the annotation promptloop.dev/rejected = "true" (and a reason), and spec.approved =
-- false when it was true (a withdrawn approval). The operator rolls the challenger back at once
-- and the proposal ends Rejected.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["promptloop.dev/rejected"] = "true"
if obj.metadata.annotations["promptloop.dev/rejected-reason"] == nil then
  obj.metadata.annotations["promptloop.dev/rejected-reason"] = "rejected with the Argo CD action"
end
if obj.spec ~= nil and obj.spec.approved == true then
  obj.spec.approved = false
end
return obj
