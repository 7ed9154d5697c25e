#!/usr/bin/python3
"""packaging/kubernetes: both lazystore components rendered with `kubectl kustomize` over
Buildbarn's real bb-deployments manifests (kubernetes/), with and without the seed's `nfs:` volume.

Checks: the runner gets /dev/fuse (or the shared mount), the cache volume and keeps its security
context (sidecar: unchanged; entrypoint: bb_runner still drops to 65534); the seed's NFS volume is
gone; everything else bb-deployments renders — the other containers of the worker pod, the other
Deployments, the config maps — is byte-for-byte what bb-deployments renders alone.

The manifests are found at $BB_DEPLOYMENTS_DIR (a bb-deployments checkout or its kubernetes/), else
at ../shared/bb-deployments next to the source tree. Where neither exists the test renders over a
small stand-in Deployment it writes itself (same names and mounts as bb-deployments' worker) and
says so on stderr."""

import copy
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import yaml

SOURCE_ROOT = os.environ.get("SOURCE_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
KUBE = os.path.abspath(os.path.join(SOURCE_ROOT, "packaging", "kubernetes"))
WORKER = ("Deployment", "buildbarn", "worker-ubuntu22-04")

STANDIN = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: worker-ubuntu22-04, namespace: buildbarn}
spec:
  selector: {matchLabels: {app: worker}}
  template:
    metadata: {labels: {app: worker}}
    spec:
      containers:
      - name: worker
        image: worker
        volumeMounts:
        - {mountPath: /config/, name: configs, readOnly: true}
        - {mountPath: /worker, name: worker}
      - name: runner
        image: runner
        command: [/bb/bb_runner, /config/runner-ubuntu22-04.jsonnet]
        securityContext: {runAsUser: 65534, allowPrivilegeEscalation: false}
        volumeMounts:
        - {mountPath: /config/, name: configs, readOnly: true}
        - {mountPath: /worker, name: worker}
        - {mountPath: /bb, name: empty, readOnly: true}
      volumes:
      - {name: empty, emptyDir: {}}
      - {name: configs, configMap: {name: buildbarn-config}}
      - {name: worker, emptyDir: {}}
"""


def find_bb_deployments():
    candidates = [os.environ.get("BB_DEPLOYMENTS_DIR", ""),
                  os.path.join(SOURCE_ROOT, "..", "shared", "bb-deployments")]
    for candidate in filter(None, candidates):
        for path in (os.path.join(candidate, "kubernetes"), candidate):
            if os.path.exists(os.path.join(path, "worker-ubuntu22-04.yaml")):
                return os.path.abspath(path)
    return None


class Render:
    """kustomize output of bb-deployments plus components, as {(kind, namespace, name): doc}."""

    def __init__(self, work, bb_dir):
        self.work = work
        self.bb_dir = bb_dir

    def __call__(self, *components):
        overlay = tempfile.mkdtemp(dir=self.work)
        with open(os.path.join(overlay, "kustomization.yaml"), "w") as f:
            yaml.safe_dump({"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                            # kustomize takes no absolute directories
                            "resources": [os.path.relpath(self.bb_dir, overlay)],
                            "components": [os.path.relpath(os.path.join(KUBE, c), overlay)
                                           for c in components]}, f)
        out = subprocess.run(["kubectl", "kustomize", "--load-restrictor", "LoadRestrictionsNone", overlay],
                             check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             timeout=120).stdout
        docs = {}
        for doc in yaml.safe_load_all(out):
            if doc:
                key = (doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"])
                docs[key] = doc
        return docs


def container(spec, name):
    (found,) = [c for c in spec["containers"] if c["name"] == name]
    return found


def mount_at(c, path):
    found = [m for m in c.get("volumeMounts", []) if m["mountPath"] == path]
    return found[0] if found else None


def pod(docs):
    return docs[WORKER]["spec"]["template"]["spec"]


class Components(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.mkdtemp(prefix="lazystore-kube-")
        bb_dir = find_bb_deployments()
        if bb_dir is None:
            bb_dir = os.path.join(cls.work, "standin")
            os.mkdir(bb_dir)
            with open(os.path.join(bb_dir, "worker-ubuntu22-04.yaml"), "w") as f:
                f.write(STANDIN)
            with open(os.path.join(bb_dir, "kustomization.yaml"), "w") as f:
                f.write("resources: [worker-ubuntu22-04.yaml]\n")
            print("NOTE: bb-deployments' manifests not found (set BB_DEPLOYMENTS_DIR): rendering over "
                  "a stand-in worker Deployment", file=sys.stderr)
        else:
            print(f"rendering over bb-deployments' manifests in {bb_dir}", file=sys.stderr)
        cls.render = Render(cls.work, bb_dir)
        cls.original = cls.render()
        cls.seed = cls.render("seed")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.work, ignore_errors=True)

    def assert_rest_unchanged(self, docs):
        """Every document but the worker Deployment is what bb-deployments renders alone, and so
        are the worker pod's other containers, init containers and volumes."""
        self.assertEqual(set(docs), set(self.original))
        for key, doc in self.original.items():
            if key != WORKER:
                self.assertEqual(docs[key], doc, key)
        before, after = pod(self.original), pod(docs)
        self.assertEqual(after.get("initContainers"), before.get("initContainers"))
        for c in before["containers"]:
            if c["name"] != "runner":
                self.assertEqual(container(after, c["name"]), c)
        volumes = {v["name"]: v for v in after["volumes"]}
        for v in before["volumes"]:
            self.assertEqual(volumes[v["name"]], v)

    def assert_no_nfs(self, spec):
        self.assertFalse([v["name"] for v in spec["volumes"] if "nfs" in v], "an nfs volume is left")
        for c in spec["containers"]:
            for m in c.get("volumeMounts", []):
                self.assertNotEqual(m["name"], "nfs-vol", c["name"])

    def assert_fuse_and_cache(self, spec, c):
        volumes = {v["name"]: v for v in spec["volumes"]}
        self.assertEqual(volumes[mount_at(c, "/dev/fuse")["name"]]["hostPath"],
                         {"path": "/dev/fuse", "type": "CharDevice"})
        cache = mount_at(c, "/var/cache/lazystore")
        self.assertIsNotNone(cache)
        self.assertIn(cache["name"], volumes)

    def assert_runner_mounts_kept(self, runner):
        original = container(pod(self.original), "runner")
        for m in original["volumeMounts"]:
            self.assertEqual(mount_at(runner, m["mountPath"]), m)

    def test_seed_component_is_the_guide(self):
        spec = pod(self.seed)
        volumes = {v["name"]: v for v in spec["volumes"]}
        self.assertEqual(volumes["nfs-vol"]["nfs"]["path"], "/nix/store")
        self.assertEqual(mount_at(container(spec, "runner"), "/nix/store")["name"], "nfs-vol")

    def check_sidecar(self, docs):
        self.assert_rest_unchanged(docs)
        spec = pod(docs)
        self.assert_no_nfs(spec)
        sidecar = container(spec, "lazystore")
        self.assertTrue(sidecar["securityContext"]["privileged"])
        self.assertEqual(sidecar["command"][0], "lazystore")
        self.assertIn("/nix/store", sidecar["command"])
        self.assertIn("cache=/var/cache/lazystore", ",".join(sidecar["command"]))
        self.assert_fuse_and_cache(spec, sidecar)
        store = mount_at(sidecar, "/nix/store")
        self.assertEqual(store["mountPropagation"], "Bidirectional")
        runner = container(spec, "runner")
        original = container(pod(self.original), "runner")
        self.assertEqual(runner["securityContext"], original["securityContext"])
        self.assertEqual(runner["image"], original["image"])
        self.assertEqual(runner["command"], original["command"])
        self.assert_runner_mounts_kept(runner)
        runner_store = mount_at(runner, "/nix/store")
        self.assertEqual(runner_store["name"], store["name"])
        self.assertEqual(runner_store["mountPropagation"], "HostToContainer")
        self.assertIn("emptyDir", {v["name"]: v for v in spec["volumes"]}[store["name"]])

    def check_entrypoint(self, docs):
        self.assert_rest_unchanged(docs)
        spec = pod(docs)
        self.assert_no_nfs(spec)
        runner = container(spec, "runner")
        self.assert_fuse_and_cache(spec, runner)
        self.assert_runner_mounts_kept(runner)
        self.assertIsNone(mount_at(runner, "/nix/store"), "the store is the runner's own FUSE mount")
        original = container(pod(self.original), "runner")
        command = runner["command"]
        self.assertEqual(command[0], "/usr/local/bin/lazystore-entrypoint")
        # bb_runner still runs as the original user, with no capabilities and no escalation.
        self.assertEqual(command[-len(original["command"]):], original["command"])
        uid = original["securityContext"]["runAsUser"]
        self.assertIn(f"--reuid={uid}", command)
        self.assertIn("--bounding-set=-all", command)
        self.assertEqual(runner["securityContext"]["allowPrivilegeEscalation"],
                         original["securityContext"]["allowPrivilegeEscalation"])
        self.assertEqual(runner["securityContext"]["capabilities"]["add"], ["SYS_ADMIN"])
        env = {e["name"]: e.get("value") for e in runner["env"]}
        self.assertTrue(env["LAZYSTORE_SOURCE"])

    def test_sidecar_over_bb_deployments(self):
        self.check_sidecar(self.render("sidecar"))

    def test_sidecar_replaces_the_seed(self):
        self.check_sidecar(self.render("seed", "sidecar"))

    def test_entrypoint_over_bb_deployments(self):
        self.check_entrypoint(self.render("entrypoint"))

    def test_entrypoint_replaces_the_seed(self):
        self.check_entrypoint(self.render("seed", "entrypoint"))


def main():
    if shutil.which("kubectl") is None:
        reason = "no kubectl"
        if os.environ.get("LAZYSTORE_STRICT") == "1" or os.environ.get("CI") == "true":
            print(f"FAIL: would skip in strict mode (CI): {reason}", file=sys.stderr)
            sys.exit(1)
        print(f"SKIP: {reason}", file=sys.stderr)
        sys.exit(77)
    program = unittest.main(verbosity=2, exit=False)
    sys.exit(0 if program.result.wasSuccessful() and not program.result.skipped else 1)


if __name__ == "__main__":
    main()
