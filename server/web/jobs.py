"""Case exports run as background jobs so that the page can show progress and stay responsive.

A job runs ``server.export.service.export_case`` — the API's export, with its rules and its ``exported``
custody event — on a thread with its own database session; the page polls the job and, when it is
done, downloads the bag through the API's download route (which logs ``downloaded``). Jobs live in the
server process's memory: a restart forgets a job, never a finished bag (it stays in the exports folder).
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI

from server.auth.principal import Principal
from server.errors import ServerError
from server.evidence.store import BlobStore
from server.export import service as export

_LOCK = threading.Lock()
#: Finished jobs are forgotten after this many seconds (the bag itself stays).
KEEP_S = 3600


@dataclass
class ExportJob:
    """One export: who asked, for which case, how far it got."""

    id: str
    user_id: int
    case_number: str
    state: str = "queued"  # queued | building | done | failed
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    export_id: str | None = None
    clips: int = 0
    manifest_sha256: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """What the page polls."""
        elapsed = (self.finished or time.monotonic()) - self.started
        download = (
            f"/api/v1/cases/by-number/{quote(self.case_number, safe='')}/exports/{self.export_id}?format=zip"
            if self.export_id
            else None
        )
        return {
            "id": self.id,
            "state": self.state,
            "progress": {"queued": 0.05, "building": 0.5, "done": 1.0, "failed": 1.0}[self.state],
            "elapsed_s": round(elapsed, 1),
            "clips": self.clips,
            "manifest_sha256": self.manifest_sha256,
            "download": download,
            "error": self.error,
        }


def _jobs(app: FastAPI) -> dict[str, ExportJob]:
    with _LOCK:
        if not hasattr(app.state, "web_export_jobs"):
            app.state.web_export_jobs = {}
        jobs: dict[str, ExportJob] = app.state.web_export_jobs
        now = time.monotonic()
        for key in [k for k, j in jobs.items() if j.finished and now - j.finished > KEEP_S]:
            del jobs[key]
        return jobs


def start_export(app: FastAPI, *, principal: Principal, store: BlobStore, number: str) -> ExportJob:
    """Queue the export of case ``number`` for ``principal`` and start it on a thread."""
    job = ExportJob(id=secrets.token_hex(8), user_id=principal.user_id, case_number=number)
    _jobs(app)[job.id] = job

    def run() -> None:
        job.state = "building"
        try:
            with app.state.session_factory() as session:
                done = export.export_case(
                    session,
                    principal=principal,
                    settings=app.state.settings,
                    factory=app.state.session_factory,
                    store=store,
                    number=number,
                )
                session.commit()
            job.export_id, job.clips, job.manifest_sha256 = done.export_id, done.clips, done.manifest_sha256
            job.state = "done"
        except ServerError as exc:
            job.error, job.state = str(exc), "failed"
        except Exception as exc:  # shown on the page and re-raised: the job says it failed
            job.error, job.state = f"{type(exc).__name__}: {exc}", "failed"
            raise
        finally:
            job.finished = time.monotonic()

    threading.Thread(target=run, name=f"export-{job.id}", daemon=True).start()
    return job


def get_job(app: FastAPI, *, principal: Principal, job_id: str) -> ExportJob | None:
    """The job, if this user started it."""
    job = _jobs(app).get(job_id)
    return job if job is not None and job.user_id == principal.user_id else None
