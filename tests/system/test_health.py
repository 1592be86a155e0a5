import uuid

import httpx


async def test_health_answers_an_envelope_with_a_request_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/health")
    assert response.status_code == 200
    body = response.json()
    assert body["data"] == {"status": "ok"}
    assert body["meta"]["request_id"] == response.headers["x-request-id"]
    uuid.UUID(body["meta"]["request_id"])
    assert body["meta"]["timestamp"].endswith("+00:00")


async def test_ready_when_the_database_answers(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/ready")
    assert response.status_code == 200
    assert response.json()["data"] == {"status": "ok", "database": "ok"}


async def test_request_ids_are_fresh_per_request(client: httpx.AsyncClient) -> None:
    ids = {(await client.get("/api/health")).headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3
