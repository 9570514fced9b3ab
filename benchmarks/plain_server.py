"""The usual hand-written model server, for the "concurrent clients" benchmark to compare against.

`python -m benchmarks.plain_server MODEL_FOLDER --port N`: one FastAPI route that calls `transformers`' sentiment
pipeline on each request's texts as they come, in FastAPI's thread pool (a plain `def` route), under uvicorn:
no batching across requests, no admission control.
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import uvicorn  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from pydantic import BaseModel  # noqa: E402
from transformers import pipeline  # noqa: E402


class Texts(BaseModel):
    texts: list[str]


def create_app(model_folder: str) -> FastAPI:
    classifier = pipeline("text-classification", model=model_folder, truncation=True)
    app = FastAPI()

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.post("/classify")
    def classify(body: Texts) -> dict:
        results = classifier(body.texts)
        return {"labels": [r["label"] for r in results], "confidences": [r["score"] for r in results]}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model_folder")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(create_app(args.model_folder), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
