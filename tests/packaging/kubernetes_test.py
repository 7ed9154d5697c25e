#!/usr/bin/python3
"""packaging/kubernetes: both overlays render with `kubectl kustomize` and hold what they must:
no NFS volume left, /dev/fuse and what mounting needs, a cache volume, the store at /nix/store
on the runner (with mount propagation from the sidecar in that variant)."""

import os
import shutil
import subprocess
import sys
import unittest

import yaml

KUBE = os.path.join(os.environ.get("SOURCE_ROOT", os.path.dirname(__file__) + "/../.."), "packaging", "kubernetes")


def render(overlay):
    out = subprocess.run(["kubectl", "kustomize", os.path.join(KUBE, overlay)], check=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    return deployment["spec"]["template"]["spec"]


def container(spec, name):
    (found,) = [c for c in spec["containers"] if c["name"] == name]
    return found


def mount_at(c, path):
    found = [m for m in c.get("volumeMounts", []) if m["mountPath"] == path]
    return found[0] if found else None


class Overlays(unittest.TestCase):
    def common(self, spec, store_volume=True):
        volumes = {v["name"]: v for v in spec["volumes"]}
        self.assertFalse([n for n, v in volumes.items() if "nfs" in v], "an nfs volume is left")
        self.assertNotIn("nfs-vol", volumes)
        self.assertEqual(volumes["dev-fuse"]["hostPath"], {"path": "/dev/fuse", "type": "CharDevice"})
        self.assertIn("lazystore-cache", volumes)
        runner = container(spec, "runner")
        if store_volume:
            self.assertIsNotNone(mount_at(runner, "/nix/store"), "the runner has no /nix/store")
        # bb-deployments' other mounts are untouched.
        for path in ("/worker", "/bb", "/config/"):
            self.assertIsNotNone(mount_at(runner, path), path)
        self.assertEqual({c["name"] for c in spec["containers"]} >= {"worker", "runner"}, True)
        return volumes, runner

    def test_base_is_the_seed(self):
        spec = render("base")
        volumes = {v["name"]: v for v in spec["volumes"]}
        self.assertEqual(volumes["nfs-vol"]["nfs"]["path"], "/nix/store")
        self.assertEqual(mount_at(container(spec, "runner"), "/nix/store")["name"], "nfs-vol")

    def test_sidecar_variant(self):
        spec = render("sidecar")
        volumes, runner = self.common(spec)
        sidecar = container(spec, "lazystore")
        self.assertTrue(sidecar["securityContext"]["privileged"])
        self.assertEqual(sidecar["command"][0], "lazystore")
        self.assertIn("/nix/store", sidecar["command"])
        self.assertIn("cache=/var/cache/lazystore", ",".join(sidecar["command"]))
        store = mount_at(sidecar, "/nix/store")
        self.assertEqual(store["mountPropagation"], "Bidirectional")
        self.assertIsNotNone(mount_at(sidecar, "/dev/fuse"))
        self.assertEqual(mount_at(sidecar, "/var/cache/lazystore")["name"], "lazystore-cache")
        runner_store = mount_at(runner, "/nix/store")
        self.assertEqual(runner_store["name"], store["name"])
        self.assertEqual(runner_store["mountPropagation"], "HostToContainer")
        self.assertIn("emptyDir", volumes[store["name"]])
        self.assertEqual(runner["securityContext"]["runAsUser"], 65534)

    def test_entrypoint_variant(self):
        spec = render("entrypoint")
        volumes, runner = self.common(spec, store_volume=False)
        self.assertEqual(runner["command"][0], "/usr/local/bin/lazystore-entrypoint")
        self.assertIn("/bb/bb_runner", runner["command"])
        self.assertIn("--reuid=65534", runner["command"])
        self.assertIn("SYS_ADMIN", runner["securityContext"]["capabilities"]["add"])
        self.assertIsNotNone(mount_at(runner, "/dev/fuse"))
        self.assertEqual(mount_at(runner, "/var/cache/lazystore")["name"], "lazystore-cache")
        env = {e["name"]: e.get("value") for e in runner["env"]}
        self.assertTrue(env["LAZYSTORE_SOURCE"])
        # The store is the runner's own FUSE mount, not a volume.
        self.assertIsNone(mount_at(runner, "/nix/store"))


if __name__ == "__main__":
    if shutil.which("kubectl") is None:
        print("SKIP: no kubectl", file=sys.stderr)
        sys.exit(77)
    unittest.main(verbosity=2)
