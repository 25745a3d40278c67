-- Argo CD health of a promptloop.dev AgentRollout (resource.customizations.health.promptloop.dev_AgentRollout).
-- Healthy: Stable (the stable version serves; no canary).
-- Progressing: no status yet, the operator has not seen the latest spec, Pending, Progressing
--   (a canary is stepping), Promoting.
-- Suspended: AwaitingApproval (the canary holds below its ceiling until a person approves).
-- Degraded: RolledBack (the last challenger was worse or failed), Invalid (the spec or a
--   referenced object is wrong).
local hs = {}
local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the promptloop operator to report a phase"
  return hs
end
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end
local phase = status.phase
local message = status.message or ""
local canary = status.canary or {}
if phase == "Stable" then
  hs.status = "Healthy"
  if message == "" then
    message = "Stable at " .. tostring(status.stableVersion)
  end
elseif phase == "AwaitingApproval" then
  hs.status = "Suspended"
  if message == "" and canary.proposal ~= nil then
    message = "Awaiting approval of PromptProposal " .. canary.proposal
  end
elseif phase == "RolledBack" or phase == "Invalid" then
  hs.status = "Degraded"
elseif phase == "Pending" or phase == "Progressing" or phase == "Promoting" then
  hs.status = "Progressing"
  if message == "" and canary.version ~= nil then
    message = "Canary " .. canary.version .. " at " .. tostring(canary.weight) .. "%"
  end
else
  hs.status = "Unknown"
  message = "Unknown phase " .. tostring(phase)
end
hs.message = message
return hs
