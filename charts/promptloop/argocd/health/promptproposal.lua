-- Argo CD health of a promptloop.dev PromptProposal (resource.customizations.health.promptloop.dev_PromptProposal).
-- Healthy: Promoted (it is the stable prompt), Superseded (it was, until a later promotion).
-- Progressing: no status yet, Pending (queued), Rendered (challenger starting), Canary.
-- Suspended: AwaitingApproval (set spec.approved: true to let the canary pass its ceiling).
-- Degraded: RolledBack (the evidence said it is worse), Rejected (approval refused or
--   withdrawn), Invalid (it cannot run: missing rollout, duplicate version, ...). A proposal kept
--   in git after it failed keeps its Application Degraded until it is removed from git.
local hs = {}
local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the promptloop operator to report a phase"
  return hs
end
local phase = status.phase
local message = status.message or ""
if phase == "Promoted" or phase == "Superseded" then
  hs.status = "Healthy"
elseif phase == "AwaitingApproval" then
  hs.status = "Suspended"
  if message == "" then
    message = "Awaiting approval: set spec.approved to true"
  end
elseif phase == "RolledBack" or phase == "Rejected" or phase == "Invalid" then
  hs.status = "Degraded"
elseif phase == "Pending" or phase == "Rendered" or phase == "Canary" then
  hs.status = "Progressing"
  if message == "" and status.weight ~= nil then
    message = "Canary at " .. tostring(status.weight) .. "%"
  end
else
  hs.status = "Unknown"
  message = "Unknown phase " .. tostring(phase)
end
hs.message = message
return hs
