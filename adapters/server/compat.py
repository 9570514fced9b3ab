"""Routes that keep the seed systems' own clients working unchanged.

Seed 004's email server answered `POST /` (port 8008) with `{"prompt", "token_count", "temperature", "n_gen"}`.
Here `POST /` is the very endpoint of `/models/t5-email/generate`, registered a second time: the same body,
validation, answer and status codes (404 when this server does not load t5-email).
"""
from __future__ import annotations

from fastapi import APIRouter

from .routes import ERRORS, generate

router = APIRouter()
router.add_api_route(
    "/", generate, methods=["POST"], responses=ERRORS, tags=["t5-email"], name="seed_004_generate",
    summary="Seed 004 compatibility route: the same as POST /models/t5-email/generate",
    description="Seed 004's clients `POST /` with `{\"prompt\", \"token_count\", \"temperature\", \"n_gen\"}`; "
                "this route answers them exactly as `/models/t5-email/generate` does.")
