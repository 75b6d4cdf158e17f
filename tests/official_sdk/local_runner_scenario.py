"""Runs INSIDE a virtual environment with the official `clarifai` SDK (not Orchard's).

Calls the model that `clarifai model serve` (the official local runner) serves from Orchard,
with the official typed client: predict, generate and stream, then a generate it closes after
the first output (which cancels the call). Environment: CLARIFAI_API_BASE, CLARIFAI_PAT,
CLARIFAI_USER_ID.
"""

import os

from clarifai.client.model import Model

user = os.environ["CLARIFAI_USER_ID"]
model = Model(
    url=f"https://clarifai.com/{user}/official-runner/models/served",
    base_url=os.environ["CLARIFAI_API_BASE"],
    pat=os.environ["CLARIFAI_PAT"],
    deployment_id="local-served",
    deployment_user_id=user,
)
assert sorted(model.available_methods()) == ["generate", "hold", "predict", "stream"]
assert model.predict(text="served") == "SERVED"
print("ok: predict", flush=True)
assert list(model.generate(text="one two three")) == ["one", "two", "three"]
print("ok: generate", flush=True)
assert list(model.stream(input_iterator=iter(["a", "b"]))) == ["A", "B"]
print("ok: stream", flush=True)
held = model.hold(text="first")
assert next(held) == "first"
held.close()  # the call is cancelled
print("ok: held generate closed", flush=True)
