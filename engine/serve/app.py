"""The model server's HTTP API: TensorFlow Serving's REST API with the run id as the model name, and a few extras.

    GET  /v1/models                          the runs served here (an extra)
    GET  /v1/models/RUN[/versions/1]         {"model_version_status": [...]}, as TF Serving
    GET  /v1/models/RUN/metadata             the signature (TF Serving's shape) plus class names and input rule
    POST /v1/models/RUN:predict              {"instances": [...]} → {"predictions": [...]}, {"inputs"} → {"outputs"}
    POST /v1/models/RUN:classify_image       an image file (the body, or a multipart file) → top-k and a log id
    POST /v1/models/RUN:explain              an image file → an attribution map (Grad-CAM by default)
    POST /v1/models/RUN/feedback             {"log_id": ..., "label": ...} → the logged prediction, judged
    GET  /healthz                            "ok" (no token needed)

Query parameters: `format` (keras, int8, float32, onnx, ...: which artifact answers), `k` (top-k),
`source` (demo, explain, api: recorded in the log), `log=0` (do not record: the dashboard's own
test-set views), and for `:explain` `method` and `target`. Errors are `{"error": "..."}` with
400 (bad input), 401 (token), 404 (unknown run, format or log id) or 413 (body too large); an
unexpected failure is a 500 with one line and no traceback, and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from engine.serve import inputs
from engine.serve.inputs import ServeError, bad
from engine.serve.models import ModelRegistry, Request as LogRequest, ServedRun, log_ids
from engine.store import LogNotFound

log = logging.getLogger(__name__)

SOURCES = ("api", "demo", "explain")
BODY_TIMEOUT_SECONDS = 30.0
_STALLED = "aperture.stalled"  # set in the request's scope when its body stopped arriving
_PATH = re.compile(r"^(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+))?(?:/(?P<sub>metadata|feedback))?"
                   r"(?::(?P<verb>[A-Za-z_]+))?$")


def make_app(registry: ModelRegistry, *, token: str | None = None, max_body_bytes: int = inputs.MAX_BODY_BYTES,
             body_timeout_s: float = BODY_TIMEOUT_SECONDS) -> Starlette:
    """The ASGI app serving `registry`'s runs; with `token`, every model route needs `Authorization: Bearer TOKEN`.
    A body that stops arriving for `body_timeout_s` is answered with a 400 (a stalled client must not hold a
    connection for ever)."""
    api = _Api(registry, token, max_body_bytes)
    return Starlette(middleware=[Middleware(_BodyTimeout, seconds=body_timeout_s)], routes=[
        Route("/healthz", lambda request: PlainTextResponse("ok")),
        Route("/v1/models", api.guarded(api.list_models)),
        Route("/v1/models/{rest:path}", api.guarded(api.dispatch), methods=["GET", "POST"]),
    ])


class _BodyTimeout:
    """ASGI middleware: a wait of more than `seconds` for the next part of a request body reads as a disconnect
    (which the handlers answer with a 400), with the scope marked so the message can say it stalled."""

    def __init__(self, app, seconds: float):
        self.app, self.seconds = app, seconds

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def timed_receive():
            try:
                return await asyncio.wait_for(receive(), self.seconds)
            except asyncio.TimeoutError:
                scope[_STALLED] = self.seconds
                return {"type": "http.disconnect"}

        await self.app(scope, timed_receive, send)


def _ended_early(request: Request) -> ServeError:
    stalled = request.scope.get(_STALLED)
    if stalled:
        return bad(f"the body stopped arriving for {stalled:g} s (stalled upload)")
    return bad("the body ended before its announced length (truncated upload)")


class _Api:
    def __init__(self, registry: ModelRegistry, token: str | None, max_body_bytes: int):
        self.registry, self.token, self.max_body_bytes = registry, token, max_body_bytes
        self.explainer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="explain")
        self._warmed = threading.Event()

    def guarded(self, handler):
        """`handler` with the token check and errors turned into TF Serving's `{"error": ...}` shape."""
        @functools.wraps(handler)
        async def endpoint(request: Request):
            try:
                self._check_token(request)
                return await handler(request)
            except ServeError as error:
                headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
                return JSONResponse({"error": error.message}, status_code=error.status, headers=headers)
            except Exception as error:  # noqa: BLE001 - one line to the client, the traceback to the server's log
                log.exception("request %s %s failed", request.method, request.url.path)
                return JSONResponse({"error": f"internal error ({type(error).__name__}: {str(error)[:200]})"},
                                    status_code=500)
        return endpoint

    def _check_token(self, request: Request) -> None:
        if not self.token:
            return
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), self.token.encode()):
            raise ServeError(401, "this server needs a bearer token: send 'Authorization: Bearer $APERTURE_API_TOKEN'")

    # -- routing ----------------------------------------------------------------------------------

    async def list_models(self, request: Request):
        runs = await run_in_threadpool(self.registry.served_runs)
        return JSONResponse({"models": [{"name": r.run_id, "label": r.label, "formats": list(r.artifacts)}
                                        for r in runs]})

    async def dispatch(self, request: Request):
        match = _PATH.match(request.path_params["rest"])
        if match is None:
            raise ServeError(404, f"no such route: {request.url.path}")
        name, version, sub, verb = match.group("name", "version", "sub", "verb")
        if version not in (None, "1"):
            raise ServeError(404, f"model {name} has only version 1")
        served = await run_in_threadpool(self.registry.served, name)
        route = (request.method, sub, verb)
        if route == ("GET", None, None):
            return JSONResponse(_status())
        if route == ("GET", "metadata", None):
            return JSONResponse(_metadata(served))
        if route == ("POST", None, "predict"):
            return await self.predict(request, served)
        if route == ("POST", None, "classify_image"):
            return await self.classify_image(request, served)
        if route == ("POST", None, "explain"):
            return await self.explain(request, served)
        if route == ("POST", "feedback", None):
            return await self.feedback(request, served)
        if request.method == "POST" and verb in ("classify", "regress"):
            raise ServeError(400, f":{verb} needs tf.Example inputs, which this model does not take; use :predict")
        raise ServeError(404 if verb or sub else 405, f"no {request.method} {request.url.path}")

    # -- handlers ---------------------------------------------------------------------------------

    async def predict(self, request: Request, served: ServedRun):
        columnar = []

        async def read() -> np.ndarray:
            body = inputs.parse_json(await self._body(request))
            images, is_columnar = await run_in_threadpool(inputs.predict_images, body, served.image_size)
            columnar.append(is_columnar)
            return images

        done, ids, _ = await self._predict(request, served, read)
        columnar = columnar[0]
        probabilities = np.round(done.probabilities.astype(np.float64), 7).tolist()
        return JSONResponse({"outputs" if columnar else "predictions": probabilities},
                            headers={"X-Aperture-Log-Ids": ",".join(ids)} if ids else None)

    async def classify_image(self, request: Request, served: ServedRun):
        k = inputs.top_k(request.query_params.get("k"), len(served.class_names))

        async def read() -> np.ndarray:
            return (await self._image(request, served))[None].astype(np.float32)

        done, ids, fmt = await self._predict(request, served, read)
        probabilities = done.probabilities[0]
        order = np.argsort(-probabilities)[:k]
        return JSONResponse({
            "model": served.run_id, "format": fmt, "log_id": ids[0] if ids else None,
            "top_k": [{"class": served.class_names[i], "index": int(i), "probability": float(probabilities[i])}
                      for i in order],
            "probabilities": probabilities.astype(np.float64).round(7).tolist(),
            "latency_ms": round(done.latency_ms, 3), "batch_size": done.batch_size})

    async def explain(self, request: Request, served: ServedRun):
        from engine.explain.methods import METHODS

        image = (await self._image(request, served)).astype(np.float32)
        method = request.query_params.get("method", "gradcam")
        if method not in METHODS:
            raise bad(f"method={method!r}: choose from {', '.join(METHODS)}")
        target = request.query_params.get("target")
        if target is not None:
            target = inputs.class_index(int(target) if target.isdigit() else target, served.class_names)
        done, ids, _ = await self._predict(request, served, functools.partial(_ready, image[None]), fmt="keras")
        self._warm_up_in_background()
        result = await asyncio.wrap_future(self.explainer.submit(_explain, self.registry, served, image, method,
                                                                 target))
        summary = result.summary()
        summary.update(attribution=np.round(result.attribution.astype(np.float64), 5).tolist(),
                       probabilities=done.probabilities[0].astype(np.float64).round(7).tolist(),
                       log_id=ids[0] if ids else None, model=served.run_id)
        return JSONResponse(summary)

    async def feedback(self, request: Request, served: ServedRun):
        body = inputs.parse_json(await self._body(request))
        log_id = body.get("log_id")
        if not isinstance(log_id, str) or not log_id:
            raise bad('the body needs "log_id" (from a :classify_image answer or the X-Aperture-Log-Ids header)')
        if "label" not in body:
            raise bad('the body needs "label": the true class name or index')
        label = inputs.class_index(body["label"], served.class_names)
        try:
            logged = await run_in_threadpool(self.registry.log.get, log_id)
            if logged.run_id != served.run_id:
                raise LogNotFound(log_id)
            logged = await run_in_threadpool(self.registry.log.set_feedback, log_id, label)
        except LogNotFound as error:
            raise ServeError(404, f"{error} for run {served.run_id}") from None
        return JSONResponse({"log_id": log_id, "label": served.class_names[label],
                             "predicted": served.class_names[logged.top1], "correct": logged.correct})

    # -- plumbing ---------------------------------------------------------------------------------

    async def _predict(self, request: Request, served: ServedRun, read, fmt: str | None = None):
        """Runs the images `await read()` gives through the batcher of the requested artifact; returns (Done, log
        ids, format). The batcher knows the request is on its way while it is read, so a batch waits for it."""
        source = request.query_params.get("source", "api")
        if source not in SOURCES:
            raise bad(f"source={source!r}: choose from {', '.join(SOURCES)}")
        record = request.query_params.get("log", "1") not in ("0", "false", "no")
        fmt, loaded = await run_in_threadpool(self.registry.loaded, served, fmt or request.query_params.get("format"))
        with loaded.batcher.expecting() as arrived:
            images = await read()
            ids = log_ids(len(images)) if record else []
            future = loaded.batcher.submit(images, (LogRequest(served.run_id, fmt, source, record), ids),
                                           arrived=arrived)
        return await asyncio.wrap_future(future), ids, fmt

    async def _body(self, request: Request) -> bytes:
        """The whole body, refused (413) as soon as it is over the limit, and 400 if the client stops short."""
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > self.max_body_bytes:
            raise ServeError(413, f"the body is {int(length):,} bytes; the limit is {self.max_body_bytes:,}")
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > self.max_body_bytes:
                    raise ServeError(413, f"the body is over the limit of {self.max_body_bytes:,} bytes")
                chunks.append(chunk)
        except ClientDisconnect:
            raise _ended_early(request) from None
        return b"".join(chunks)

    async def _image(self, request: Request, served: ServedRun) -> np.ndarray:
        """The image file of a request: the body itself, or the first file of a multipart form."""
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            length = request.headers.get("content-length")
            if length and length.isdigit() and int(length) > self.max_body_bytes:
                raise ServeError(413, f"the body is {int(length):,} bytes; the limit is {self.max_body_bytes:,}")
            try:
                async with request.form(max_files=1, max_fields=10, max_part_size=self.max_body_bytes) as form:
                    files = [v for v in form.values() if hasattr(v, "read")]
                    if not files:
                        raise bad("the multipart form has no file field")
                    data = await files[0].read()
            except ClientDisconnect:
                raise _ended_early(request) from None
            except ServeError:
                raise
            except Exception as error:  # noqa: BLE001 - python-multipart's parse errors
                raise bad(f"the multipart body cannot be read ({type(error).__name__}: {str(error)[:120]})") \
                    from None
        else:
            data = await self._body(request)
        return await run_in_threadpool(inputs.image_file, data, served.image_size)

    def _warm_up_in_background(self) -> None:
        """SHAP compiles its numba code on its first call in a process (15 s or more): start that early, once."""
        if self._warmed.is_set():
            return
        self._warmed.set()
        from engine.explain.methods import SIDE_BY_SIDE, METHODS, warm_up

        slow = tuple(m for m in SIDE_BY_SIDE if not METHODS[m].instant)
        self.explainer.submit(warm_up, methods=slow)


async def _ready(images: np.ndarray) -> np.ndarray:
    return images


def _explain(registry: ModelRegistry, served: ServedRun, image: np.ndarray, method: str, target: int | None):
    from engine.explain.methods import METHODS, explain
    from engine.models import last_conv_layer_name

    model = registry.keras_model(served)
    config = registry.workspace.get_run(served.run_id).config
    params = {"layer_name": last_conv_layer_name(config.model)} if METHODS[method].needs_conv else {}
    return explain(model, image, method, target=target, class_names=served.class_names, **params)


def _status() -> dict:
    return {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                      "status": {"error_code": "OK", "error_message": ""}}]}


def _metadata(served: ServedRun) -> dict:
    size, classes = served.image_size, len(served.class_names)

    def shape(*dims: int) -> dict:
        return {"dim": [{"size": str(d), "name": ""} for d in dims], "unknown_rank": False}

    signature = {
        "inputs": {inputs.INPUT_NAME: {"dtype": "DT_FLOAT", "tensor_shape": shape(-1, size, size, 3),
                                       "name": f"{inputs.SIGNATURE}_{inputs.INPUT_NAME}:0"}},
        "outputs": {"probabilities": {"dtype": "DT_FLOAT", "tensor_shape": shape(-1, classes),
                                      "name": "StatefulPartitionedCall:0"}},
        "method_name": "tensorflow/serving/predict"}
    return {
        "model_spec": {"name": served.run_id, "signature_name": "", "version": "1"},
        "metadata": {"signature_def": {"signature_def": {inputs.SIGNATURE: signature}}},
        "aperture": {
            "label": served.label,
            "input": {"name": inputs.INPUT_NAME, "shape": [-1, size, size, 3], "dtype": "float32",
                      "range": [0, 255], "channels": "RGB",
                      "rule": f"RGB pixels 0..255 (not scaled), resized to {size}x{size}; the model normalises"},
            "output": {"name": "probabilities", "shape": [-1, classes], "dtype": "float32",
                       "meaning": "class probabilities (softmax), in class_names order"},
            "class_names": served.class_names,
            "formats": list(served.artifacts),
            "parity": served.parity}}  # each export's accuracy, drop, latency and size as its parity report measured
