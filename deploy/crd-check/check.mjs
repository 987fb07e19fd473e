// deploy/check step: validates every manifest in deploy/kubernetes of a kind Kubernetes does not
// build in against its CRD's schema (KEDA's ScaledObject, from @kubernetes-models/keda), and checks
// that it points at the Deployment and at metrics the worker really exports.
import { readFileSync, readdirSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import yaml from "js-yaml";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const manifests = join(root, "deploy", "kubernetes");
const metricsSource = readFileSync(join(root, "src", "telemetry", "metrics.rs"), "utf8");
const problems = [];
let checked = 0;

const deployments = new Set();
const scaled = [];
for (const file of readdirSync(manifests).filter((f) => f.endsWith(".yaml")).sort()) {
  for (const doc of yaml.loadAll(readFileSync(join(manifests, file), "utf8"))) {
    if (!doc) continue;
    if (doc.kind === "Deployment") deployments.add(doc.metadata?.name);
    if (doc.apiVersion === "keda.sh/v1alpha1" && doc.kind === "ScaledObject") scaled.push([file, doc]);
  }
}

for (const [file, doc] of scaled) {
  checked++;
  try {
    new ScaledObject(doc).validate();
  } catch (err) {
    problems.push(`${file}: not a valid KEDA ScaledObject: ${err.message}`);
    continue;
  }
  // The CRD schema allows any field under metadata; catch a mistyped top-level spec key too.
  const known = new Set(["scaleTargetRef", "minReplicaCount", "maxReplicaCount", "pollingInterval",
    "cooldownPeriod", "idleReplicaCount", "initialCooldownPeriod", "advanced", "fallback", "triggers"]);
  for (const key of Object.keys(doc.spec ?? {})) {
    if (!known.has(key)) problems.push(`${file}: unknown spec field ${key}`);
  }
  const target = doc.spec.scaleTargetRef;
  if (target.kind !== "Deployment" || !deployments.has(target.name)) {
    problems.push(`${file}: scaleTargetRef must name the Deployment (${[...deployments].join(", ")})`);
  }
  for (const trigger of doc.spec.triggers) {
    if (trigger.type !== "prometheus") continue;
    const query = trigger.metadata?.query ?? "";
    const names = query.match(/handover_[a-z_]+/g) ?? [];
    if (names.length === 0) problems.push(`${file}: prometheus trigger queries no handover metric`);
    for (const name of names) {
      if (!metricsSource.includes(`"${name}"`)) {
        problems.push(`${file}: query uses ${name}, which the worker does not export`);
      }
    }
    if (!(Number(trigger.metadata?.threshold) > 0)) {
      problems.push(`${file}: prometheus trigger needs a positive threshold`);
    }
  }
}

if (problems.length > 0) {
  for (const p of problems) console.error(`  ${p}`);
  process.exit(1);
}
console.log(`  ${checked} KEDA ScaledObject manifest(s) valid against the CRD schema`);
if (checked === 0) process.exit(1);
