-- Argo CD actions of a promptloop.dev AgentRollout: approve or reject its active proposal
-- (status.canary.proposal). Argo CD can patch only the object an action runs on, so these write
-- an annotation on the rollout naming the proposal and the digest of the prompt being canaried:
--   promptloop.dev/approve-canary or promptloop.dev/reject-canary = "<proposal>@<sha256>"
-- and the operator treats it exactly like spec.approved or promptloop.dev/rejected on that
-- proposal. Naming the digest means a stale annotation never approves a later canary.
-- Offered while a canary runs and has not rolled back; approve only while it is not approved.
local actions = {}
actions["approve"] = {["disabled"] = true, ["iconClass"] = "fa fa-fw fa-check", ["displayName"] = "Approve canary"}
actions["reject"] = {["disabled"] = true, ["iconClass"] = "fa fa-fw fa-ban", ["displayName"] = "Reject canary"}
if obj.status == nil or obj.status.canary == nil then
  return actions
end
local canary = obj.status.canary
if canary.proposal == nil or canary.promptDigest == nil or canary.rolledBack == true then
  return actions
end
local phase = obj.status.phase
if phase ~= "Progressing" and phase ~= "AwaitingApproval" and phase ~= "Promoting" then
  return actions
end
local target = canary.proposal .. "@" .. canary.promptDigest
local annotations = {}
if obj.metadata.annotations ~= nil then
  annotations = obj.metadata.annotations
end
if canary.approved ~= true and annotations["promptloop.dev/approve-canary"] ~= target then
  actions["approve"]["disabled"] = false
end
if annotations["promptloop.dev/reject-canary"] ~= target then
  actions["reject"]["disabled"] = false
end
return actions
