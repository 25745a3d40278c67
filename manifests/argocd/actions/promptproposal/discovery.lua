-- Argo CD actions of a promptloop.dev PromptProposal: which are offered now.
-- approve: sets spec.approved (what `promptloop approve` writes); offered while the proposal can
--   still be canaried (not Promoted, Superseded, RolledBack, Rejected or Invalid), is not marked
--   rejected, and is not approved already.
-- reject: marks it rejected (what `promptloop reject` writes); offered until it is Promoted,
--   Superseded, RolledBack or Rejected, unless it is already marked and not approved.
local actions = {}
actions["approve"] = {["disabled"] = true, ["iconClass"] = "fa fa-fw fa-check", ["displayName"] = "Approve"}
actions["reject"] = {["disabled"] = true, ["iconClass"] = "fa fa-fw fa-ban", ["displayName"] = "Reject"}
local phase = nil
if obj.status ~= nil then
  phase = obj.status.phase
end
local annotations = {}
if obj.metadata ~= nil and obj.metadata.annotations ~= nil then
  annotations = obj.metadata.annotations
end
local marked = annotations["promptloop.dev/rejected"] == "true"
local approved = obj.spec ~= nil and obj.spec.approved == true
local finished = phase == "Promoted" or phase == "Superseded" or phase == "RolledBack" or phase == "Rejected"
if not finished and phase ~= "Invalid" and not marked and not approved then
  actions["approve"]["disabled"] = false
end
if not finished and (approved or not marked) then
  actions["reject"]["disabled"] = false
end
return actions
