-- Approve: spec.approved = true. The operator acts on it at once (a rollout holding at
-- AwaitingApproval steps to its ceiling). Argo CD writes it as its own ServiceAccount: with the
-- chart's approval policy on, that account must be in approvalPolicy.users (docs/gitops.md).
if obj.spec == nil then
  obj.spec = {}
end
obj.spec.approved = true
return obj
