"""The admin API of experiments: create or replace, read, list, stop (delete), and the report of one."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from origin_sync.origin.analysis import build_report
from origin_sync.origin.store import NotFound, UnservableModel
from origin_sync.wire.experiments import Experiment, ExperimentOverlap, InvalidExperiment, validate_experiment

from .answers import Deleted, ExperimentAnswer, ExperimentList, ExperimentOne, ExperimentReport
from .bodies import read_json
from .errors import ApiError, json_response
from .openapi import documented
from .state import CONFIG, SINK, STORE

log = logging.getLogger("edgerec.origin")


@documented("Create or replace an experiment", body=Experiment, answer=ExperimentAnswer, errors=(409,))
async def put_experiment(request: web.Request) -> web.Response:
    """Create or replace an experiment; it reaches the edges with the data version answered."""
    try:
        experiment = validate_experiment(await read_json(request), request.match_info["experiment_id"])
    except InvalidExperiment as exc:
        raise ApiError(422, "invalid_experiment", str(exc)) from None
    try:
        version = await request.app[STORE].upsert_experiment(experiment)
    except NotFound as exc:
        raise ApiError(422, "invalid_experiment", f"variants: {exc} (publish the model first)") from None
    except UnservableModel as exc:
        raise ApiError(422, "invalid_experiment", f"variants: {exc}") from None
    except ExperimentOverlap as exc:
        raise ApiError(409, "experiment_overlap", str(exc)) from None
    log.info("experiment %s upserted at version %d", experiment["id"], version)
    return json_response({"experiment": await request.app[STORE].experiment(experiment["id"]), "data_version": version})


@documented("Read an experiment", answer=ExperimentOne)
async def get_experiment(request: web.Request) -> web.Response:
    return json_response({"experiment": await request.app[STORE].experiment(request.match_info["experiment_id"])})


@documented("Every experiment", answer=ExperimentList)
async def list_experiments(request: web.Request) -> web.Response:
    return json_response({"experiments": await request.app[STORE].experiments()})


@documented("Delete (stop) an experiment; its events stay", answer=Deleted)
async def delete_experiment(request: web.Request) -> web.Response:
    version = await request.app[STORE].delete_experiment(request.match_info["experiment_id"])
    return json_response({"deleted": request.match_info["experiment_id"], "data_version": version})


def _without_manifests(experiment: dict[str, Any]) -> dict[str, Any]:
    """The experiment with each variant's model ref cut to the model's version and sha256: the manifest (the item
    list and training report, about 150 KB a model) says nothing about the experiment."""
    return {
        **experiment,
        "variants": [
            {**v, "model_ref": {"version": v["model_ref"]["version"], "sha256": v["model_ref"]["sha256"]}}
            if v.get("model_ref")
            else v
            for v in experiment["variants"]
        ],
    }


@documented("The report of an experiment", answer=ExperimentReport, errors=(409,))
async def experiment_report(request: web.Request) -> web.Response:
    """Per variant: impressions, CTR, conversion, revenue per impression per currency (95% CIs), z-tests,
    sample-ratio check, and the feedback in the experiment's scope that matches no impression (`unattributed`)."""
    try:
        experiment = await request.app[STORE].experiment(request.match_info["experiment_id"])
        counts = await request.app[SINK].experiment_counts(experiment)
    except NotImplementedError as exc:
        raise ApiError(409, "no_queryable_sink", str(exc)) from None
    report = build_report(experiment, counts, tuning_n=request.app[CONFIG].sequential_tuning_n)
    return json_response({**report, "definition": _without_manifests(experiment)})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/v1/admin/experiments", list_experiments)
    router.add_put("/v1/admin/experiments/{experiment_id}", put_experiment)
    router.add_get("/v1/admin/experiments/{experiment_id}", get_experiment)
    router.add_get("/v1/admin/experiments/{experiment_id}/report", experiment_report)
    router.add_delete("/v1/admin/experiments/{experiment_id}", delete_experiment)
