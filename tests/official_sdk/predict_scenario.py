"""Runs INSIDE a virtual environment with the official `clarifai` SDK (not Orchard's).

The seed's prediction calls against an Orchard server with routing in the Model constructor
(clarifai >= 11.3): the nine *_by_* methods on the echo example, the typed client, and the
token streamer's generate. Environment: CLARIFAI_API_BASE, CLARIFAI_PAT, CLARIFAI_USER_ID,
TEXT_URL (a text file the server may fetch), TEXT_FILE (a local file).
"""

import os

from clarifai.client.model import Model

base = os.environ["CLARIFAI_API_BASE"]
pat = os.environ["CLARIFAI_PAT"]
user = os.environ["CLARIFAI_USER_ID"]
url, path = os.environ["TEXT_URL"], os.environ["TEXT_FILE"]


def model(name, deployment):
    return Model(
        url=f"https://clarifai.com/{user}/examples/models/{name}",
        base_url=base,
        pat=pat,
        deployment_id=deployment,
        deployment_user_id=user,
    )


def texts(responses):
    return [r.outputs[0].data.text.raw for r in responses]


echo = model("echo", "echo-dep")
assert echo.predict_by_bytes(b"hello", input_type="text").outputs[0].data.text.raw == "hello"
assert echo.predict_by_url(url, input_type="text").outputs[0].data.text.raw == "from a url"
assert echo.predict_by_filepath(path, input_type="text").outputs[0].data.text.raw == "a file"
print("ok: predict_by_bytes, predict_by_url, predict_by_filepath", flush=True)

assert texts(echo.generate_by_bytes(b"a b c", input_type="text")) == ["a ", "b ", "c"]
assert texts(echo.generate_by_url(url, input_type="text")) == ["from ", "a ", "url"]
assert texts(echo.generate_by_filepath(path, input_type="text")) == ["a ", "file"]
print("ok: generate_by_bytes, generate_by_url, generate_by_filepath", flush=True)

assert texts(echo.stream_by_bytes(iter([b"one", b"two"]), input_type="text")) == ["one", "two"]
assert texts(echo.stream_by_url(iter([url]), input_type="text")) == ["from a url"]
assert texts(echo.stream_by_filepath(path, input_type="text")) == ["a file"]
print("ok: stream_by_bytes, stream_by_url, stream_by_filepath", flush=True)

typed = model("echo", "echo-dep")
assert typed.predict(text="typed") == "typed"
assert list(typed.generate(text="x y")) == ["x ", "y"]
assert list(typed.stream(input_iterator=iter(["p", "q"]))) == ["p", "q"]
print("ok: typed client predict, generate, stream", flush=True)

tokens = model("token-streamer", "tokens")
streamed = list(tokens.generate(prompt="hello there", max_tokens=5, delay_ms=0))
assert len(streamed) == 5 and all(isinstance(t, str) for t in streamed), streamed
assert tokens.predict(prompt="hello there", max_tokens=5) == "".join(streamed)
print("ok: token streamer generate and predict", flush=True)
