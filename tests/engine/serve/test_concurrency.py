"""`engine serve` under concurrent clients: 16 x 200 :predict requests with no error, each answered with its own
image's probabilities, and exactly 3200 rows added to the prediction log; server-side batching on and off."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from engine.store import PredictionLog
from tests.engine.serve.conftest import png_bytes, start_server

CLIENTS, REQUESTS = 16, 200


def hammer(clients: int, requests: int, call) -> list:
    """`call(client, i)` from `clients` threads at once, `requests` times each; every result, in order."""
    barrier = threading.Barrier(clients)

    def client(c: int) -> list:
        barrier.wait()
        return [call(c, i) for i in range(requests)]

    with ThreadPoolExecutor(max_workers=clients) as pool:
        return [result for results in pool.map(client, range(clients)) for result in results]


@pytest.fixture(scope="module")
def images(trained) -> np.ndarray:
    return trained.test_images()[0][:64]


@pytest.mark.slow
def test_16_clients_x_200_predicts_no_error_nothing_lost_each_answer_its_own(server, trained, images):
    log = PredictionLog(trained.workspace)
    bodies = [{"instances": [image.astype(float).tolist()]} for image in images]
    reference = np.asarray(server.post_json(trained.path(":predict"), {"instances": images.astype(float).tolist()},
                                            log=0).json()["predictions"])
    before = log.count(trained.run_id)

    def call(c: int, i: int):
        index = (c * 7 + i) % len(images)  # neighbours in a batch hold different images
        reply = server.post_json(trained.path(":predict"), bodies[index])
        return index, reply

    results = hammer(CLIENTS, REQUESTS, call)
    assert len(results) == CLIENTS * REQUESTS
    failed = [(r.status, r.body[:200]) for _, r in results if r.status != 200]
    assert not failed, f"{len(failed)} failed, e.g. {failed[:3]}"
    ids = [r.headers["x-aperture-log-ids"] for _, r in results]
    assert len(set(ids)) == CLIENTS * REQUESTS and all("," not in i for i in ids)
    answers = np.asarray([r.json()["predictions"][0] for _, r in results])
    expected = reference[[index for index, _ in results]]
    assert np.allclose(answers, expected, atol=1e-5), np.abs(answers - expected).max()  # nobody got another's answer
    assert log.count(trained.run_id) == before + CLIENTS * REQUESTS
    logged = {row.id: row for row in log.recent(trained.run_id, limit=CLIENTS * REQUESTS)}
    assert set(logged) == set(ids)
    assert all(logged[i].top1 == int(a.argmax()) for i, a in zip(ids, answers))
    assert max(row.batch_size for row in logged.values()) > 1  # 16 at once: the server batched some of them


def classify_batches(server, trained, images, clients: int = CLIENTS, requests: int = 12) -> tuple[list, list]:
    """16 clients posting PNGs to :classify_image at once: the answers' batch sizes and log ids."""
    files = [png_bytes(image) for image in images]

    def call(c: int, i: int):
        reply = server.post_file(trained.path(":classify_image"), files[(c + i) % len(files)], "image/png")
        assert reply.status == 200, reply.body[:200]
        return reply.json()

    answers = hammer(clients, requests, call)
    return [a["batch_size"] for a in answers], [a["log_id"] for a in answers]


def test_concurrent_classify_image_requests_are_batched_by_default(server, trained, images):
    sizes, ids = classify_batches(server, trained, images)
    assert all(1 <= s <= 32 for s in sizes)  # the default --max-batch
    assert max(sizes) > 1, sizes
    log = PredictionLog(trained.workspace)
    assert [log.get(i).batch_size for i in ids[:20]] == sizes[:20]


@pytest.mark.slow
def test_no_batching_runs_every_request_alone_and_max_batch_caps_it(trained, images):
    alone = start_server(trained.home, "--no-batching")
    try:
        sizes, _ = classify_batches(alone, trained, images, requests=6)
        assert sizes == [1] * len(sizes)
    finally:
        assert "no batching" in alone.stop()
    capped = start_server(trained.home, "--max-batch", "3", "--batch-window-ms", "20")
    try:
        sizes, _ = classify_batches(capped, trained, images, requests=6)
        assert max(sizes) == 3 and min(sizes) >= 1, sizes  # a 20 ms window fills batches, never beyond 3
    finally:
        capped.stop()
