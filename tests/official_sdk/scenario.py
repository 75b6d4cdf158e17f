"""Runs INSIDE a virtual environment with the official `clarifai` SDK (not Orchard's).

The seed's flow against an Orchard server, using only the official package:
create, list, get and delete clusters, nodepools and deployments; list, edit and delete apps,
models and versions (not while a deployment serves them). Prints one line per step;
any failure raises, so the exit code says whether it worked. Arguments come from the
environment: CLARIFAI_API_BASE, CLARIFAI_PAT, CLARIFAI_USER_ID, CONFIG_DIR.
"""

import os
from pathlib import Path

from clarifai.client.app import App
from clarifai.client.compute_cluster import ComputeCluster
from clarifai.client.deployment import Deployment
from clarifai.client.nodepool import Nodepool
from clarifai.client.user import User

base = os.environ["CLARIFAI_API_BASE"]
pat = os.environ["CLARIFAI_PAT"]
user_id = os.environ["CLARIFAI_USER_ID"]
configs = Path(os.environ["CONFIG_DIR"])


def step(text):
    print(f"ok: {text}", flush=True)


user = User(user_id=user_id, base_url=base, pat=pat)
user.create_compute_cluster(
    compute_cluster_id="official-cc", config_filepath=str(configs / "compute_cluster.yaml")
)
user.create_compute_cluster(
    compute_cluster_config={
        "compute_cluster": {
            "cloud_provider": {"id": "local"},
            "region": "local",
            "managed_by": "user",
            "cluster_type": "dedicated",
        }
    },
    compute_cluster_id="official-cc2",
)
ids = sorted(cc.id for cc in user.list_compute_clusters())
assert ids == ["official-cc", "official-cc2"], ids
assert user.compute_cluster("official-cc").id == "official-cc"
step("compute clusters created, listed, fetched")

providers = [p.id for p in user.list_cloud_providers()]
assert "local" in providers, providers
types = [t.id for t in user.list_instance_types("local", "local")]
assert types, types
step(f"providers {providers}, instance types {types}")

cc = ComputeCluster(compute_cluster_id="official-cc", user_id=user_id, base_url=base, pat=pat)
nodepool = cc.create_nodepool(
    nodepool_id="official-np", config_filepath=str(configs / "nodepool.yaml")
)
assert nodepool.id == "official-np"
assert [n.id for n in cc.list_nodepools()] == ["official-np"]
assert cc.nodepool("official-np").id == "official-np"
step("nodepool created, listed, fetched")

user.create_app(app_id="official-app")
model = App(app_id="official-app", user_id=user_id, base_url=base, pat=pat).create_model(
    model_id="official-model", model_type_id="any-to-any"
)
version = model.create_version(pretrained_model_config={"local_dev": True})
version_id = version.model_version.id
assert version_id
step(f"app, model and version {version_id} created")

app = App(app_id="official-app", user_id=user_id, base_url=base, pat=pat)
listed = user.list_models(app_id="official-app", show=False)
assert [m["id"] for m in listed] == ["official-model"], listed
assert [m.id for m in app.list_models()] == ["official-model"]
app.patch_model("official-model", description="edited")
user.patch_app("official-app", description="edited too")
assert user.app("official-app").description == "edited too"
model.patch_version(version_id, description="edited version")
assert list(app.list_workflows()) == list(app.list_datasets()) == list(app.list_concepts()) == []
assert list(user.list_secrets()) == []
model.load_input_types()
assert list(model.input_types) == ["image", "text", "audio", "video"], model.input_types
step("models listed, app, model and version edited, empty listings")

np = Nodepool(nodepool_id="official-np", user_id=user_id, base_url=base, pat=pat)
deployment = np.create_deployment(
    deployment_id="official-dep",
    deployment_config={
        "deployment": {
            "worker": {
                "model": {
                    "id": "official-model",
                    "model_version": {"id": version_id},
                    "user_id": user_id,
                    "app_id": "official-app",
                }
            },
            "scheduling_choice": 4,
            "nodepools": [
                {"id": "official-np", "compute_cluster": {"id": "official-cc", "user_id": user_id}}
            ],
            "autoscale_config": {"min_replicas": 0, "max_replicas": 2},
        }
    },
)
assert deployment.id == "official-dep"
assert [d.id for d in np.list_deployments()] == ["official-dep"]
got = np.deployment("official-dep")
assert got.id == "official-dep"
Deployment(deployment_id="official-dep", user_id=user_id, base_url=base, pat=pat)
step("deployment created, listed, fetched")

try:
    np.create_deployment(
        deployment_id="second",
        deployment_config={
            "deployment": {
                "worker": {
                    "model": {"id": "official-model", "app_id": "official-app", "user_id": user_id}
                },
                "scheduling_choice": 4,
                "nodepools": [{"id": "official-np", "compute_cluster": {"id": "official-cc"}}],
            }
        },
    )
except Exception as exc:  # the official SDK raises a plain Exception(status)
    assert "DEPLOYMENT_INVALID_REQUEST" in str(exc) and "official-dep" in str(exc), exc
    step("second deployment of the model in the nodepool refused")
else:
    raise AssertionError("a second deployment per model per nodepool was accepted")

for delete in (
    lambda: app.delete_model("official-model"),
    lambda: model.delete_version(version_id),
    lambda: user.delete_app("official-app"),
):
    try:
        delete()
    except Exception as exc:  # the official SDK raises a plain Exception(status)
        assert "served by deployment(s)" in str(exc) and "official-dep" in str(exc), exc
    else:
        raise AssertionError("what a deployment serves was deleted")
step("model, version and app kept while a deployment serves them")

np.delete_deployments(["official-dep"])
assert list(np.list_deployments()) == []
model.delete_version(version_id)
app.delete_model("official-model")
user.delete_app("official-app")
assert list(user.list_apps()) == []
cc.delete_nodepools(["official-np"])
assert list(cc.list_nodepools()) == []
user.delete_compute_clusters(["official-cc", "official-cc2"])
assert list(user.list_compute_clusters()) == []
step("everything deleted")
