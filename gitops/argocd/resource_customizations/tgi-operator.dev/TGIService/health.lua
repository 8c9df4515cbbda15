-- Argo CD health for tgi-operator.dev/TGIService, from its kstatus conditions (Ready, Reconciling, Stalled).
-- Shipped as gitops/argocd/resource_customizations/tgi-operator.dev/TGIService/health.lua and, identical, in
-- gitops/argocd/argocd-cm.yaml (key resource.customizations.health.tgi-operator.dev_TGIService).
local hs = {status = "Progressing", message = "Waiting for the operator to report status"}
if obj.metadata.deletionTimestamp ~= nil then
  hs.message = "Deleting: the operator is removing the Cloud Run service"
  return hs
end
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and (obj.status.observedGeneration == nil or obj.status.observedGeneration < generation) then
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end
local found = {}
for _, condition in ipairs(obj.status.conditions) do
  found[condition.type] = condition
end
local stalled, reconciling, ready = found["Stalled"], found["Reconciling"], found["Ready"]
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.message or stalled.reason or "Stalled"
elseif reconciling ~= nil and reconciling.status == "True" then
  hs.message = reconciling.message or reconciling.reason or "Reconciling"
elseif ready ~= nil and ready.status == "True" then
  hs.status = ready.reason == "Suspended" and "Suspended" or "Healthy"
  hs.message = ready.message or ready.reason or "Ready"
elseif ready ~= nil then
  hs.message = ready.message or "Not ready yet"
end
return hs
