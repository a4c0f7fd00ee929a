#!/bin/bash
# The Kubernetes manifests (containers/kubernetes/): `kubectl kustomize`
# builds them offline and they say what the router needs (privileged, the
# node's pid and network namespaces, its run directory, the CDI and shim
# directories on the node); then the DaemonSet's pod, as it is, runs for real
# under `podman kube play` (paths moved into this test's directory, this
# test's CDI kind): the shim lands on the "node", the cdi container writes
# the tenants' specs, /readyz answers, and app containers given a tenant's
# device by those specs run ibv_rc_pingpong through the router.
source "$(dirname "$0")/lib.sh"
here=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=containers/podman-env.sh
source "$here/containers/podman-env.sh"
TAG=${FF_IMAGE_TAG:-dev}
KIND="ffe2e$$.ffrouter.io/tenant"
POD="ffe2e-node-$$"
kube_cleanup() {
  set +e
  podman pod rm -f -t 0 "$POD" >/dev/null 2>&1
  podman ps -aq --filter "label=ffe2e=$$" | xargs -r podman rm -f -t 0 >/dev/null 2>&1
  rm -f /var/run/cdi/ffe2e$$.ffrouter.io-tenant_*.json
  ff_cleanup
}
trap kube_cleanup EXIT
bash "$here/containers/build-images.sh" --if-stale "$FF_BUILD" "$TAG" || fail "the images did not build"

kubectl kustomize "$here/containers/kubernetes" >"$FF_WORK/all.yaml" 2>"$FF_WORK/kustomize.log" ||
  { cat "$FF_WORK/kustomize.log"; fail "kubectl kustomize"; }
port=$((20000 + $$ % 20000))
python3 - "$FF_WORK" "$FF_RUN" "$KIND" "$POD" "$port" "$here/containers/kubernetes/pod-blue.yaml" <<'PY' ||
import sys, yaml
work, run, kind, pod_name, port, app_pod = sys.argv[1:]
docs = {d["kind"]: d for d in yaml.safe_load_all(open(work + "/all.yaml"))}
assert set(docs) == {"Namespace", "ConfigMap", "DaemonSet"}, sorted(docs)
ds = docs["DaemonSet"]
spec = ds["spec"]["template"]["spec"]
assert spec["hostPID"] and spec["hostNetwork"], "the router needs the node's pid and network namespaces"
containers = {c["name"]: c for c in spec["containers"]}
assert containers["router"]["securityContext"]["privileged"], "the router must be privileged (setns)"
paths = {v["name"]: v.get("hostPath", {}).get("path") for v in spec["volumes"]}
assert paths["run"] == "/run/ffrouter" and paths["cdi"] == "/var/run/cdi", paths
assert yaml.safe_load(docs["ConfigMap"]["data"]["router.yaml"])["tenants"], "the ConfigMap holds no tenants"
app = yaml.safe_load(open(app_pod))
assert app["metadata"]["annotations"]["cdi.k8s.io/ffrouter"] == "ffrouter.io/tenant=blue", app["metadata"]
# The pod template as podman runs it: this test's paths, port and CDI kind;
# no probes (podman would hand them to systemd timers; /readyz is asked below).
for c in spec["containers"]:
    c.pop("livenessProbe", None)
    c.pop("readinessProbe", None)
# podman 4.3 races removing a finished init container ("cannot remove
# container ... as it is running"): the test runs them itself, first, as
# `podman run` with the same image, command and mounts (init.sh).
def moved(text):
    return (text.replace("/run/ffrouter", run).replace("/opt/ffrouter/lib", work + "/shim")
            .replace("127.0.0.1:9470", "127.0.0.1:" + port)
            .replace("cdi --output-dir", "cdi --kind " + kind + " --output-dir"))
volumes = {v["name"]: v for v in spec["volumes"]}
with open(work + "/init.sh", "w") as init:
    for c in spec.pop("initContainers", []):
        mounts = " ".join("-v '%s:%s'" % (volumes[m["name"]]["hostPath"]["path"], m["mountPath"])
                          for m in c.get("volumeMounts", []))
        init.write(moved("podman run --rm --label ffe2e=%s %s --entrypoint '%s' '%s' %s\n" % (
            pod_name.rsplit("-", 1)[1], mounts, c["command"][0], c["image"],
            " ".join("'%s'" % a for a in c["command"][1:] + c.get("args", [])))))
pod = {"apiVersion": "v1", "kind": "Pod",
       "metadata": {"name": pod_name, "labels": {"ffe2e": pod_name.rsplit("-", 1)[1]}}, "spec": spec}
open(work + "/pod.yaml", "w").write(moved(yaml.safe_dump(pod)))
open(work + "/configmap.yaml", "w").write(yaml.safe_dump(docs["ConfigMap"]))
PY
  fail "the manifests do not say what the router needs"
pass "kubectl kustomize: Namespace, ConfigMap (tenants), DaemonSet (privileged, hostPID, hostNetwork, run/CDI/shim hostPaths); pod-blue.yaml asks for ffrouter.io/tenant=blue"

mkdir -p "$FF_RUN" "$FF_WORK/shim"
bash -e "$FF_WORK/init.sh" || fail "the DaemonSet's init containers"
podman kube play --configmap "$FF_WORK/configmap.yaml" "$FF_WORK/pod.yaml" >"$FF_WORK/play.log" 2>&1 ||
  { cat "$FF_WORK/play.log"; fail "podman kube play of the DaemonSet's pod"; }
"$FFCTL" --run-dir "$FF_RUN" --wait 30 status >/dev/null || { podman logs "$POD-router"; fail "the router of the pod"; }
for _ in $(seq 300); do [ -e "/var/run/cdi/ffe2e$$.ffrouter.io-tenant_red.json" ] && break; sleep 0.1; done
[ -e "/var/run/cdi/ffe2e$$.ffrouter.io-tenant_blue.json" ] || { podman logs "$POD-cdi"; fail "the cdi container wrote no specs"; }
[ -s "$FF_WORK/shim/libffverbs.so" ] || fail "the init container did not put the shim on the node"
curl -sf "http://127.0.0.1:$port/readyz" | grep -q ready || fail "/readyz of the pod's router"
pass "podman kube play: the router serves, /readyz answers, the shim is on the node, the CDI specs are written"

ff_container_pair a 10.49.0.1 b 10.49.0.2
ff_in_container() {
  local ns="ffc-$1-$$" tenant=$2
  shift 2
  podman run --rm --label "ffe2e=$$" --network "ns:/run/netns/$ns" --device "$KIND=$tenant" -e FFV_DEBUG=1 \
    "localhost/ffrouter-app:$TAG" "$@"
}
before=$(ff_bytes)
ff_pair a b 10.49.0.1 18515 blue ibv_rc_pingpong -g 0 -n 100
[ "$(ff_bytes)" -gt "$before" ] || fail "ibv_rc_pingpong did not go through the pod's router"
pass "app containers with the pod's CDI specs: ibv_rc_pingpong through the router"
echo "3 passed, 0 failed"
