"""`/v1/models`: list, inspect, activate and reload model versions; class reference spectra."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from service.catalog import describe_model, version_detail
from service.deps import ApiKeyDep, ManagerDep
from service.errors import LabelNotFound
from service.registry import check_name
from service.routes.common import problems
from service.routes.identify import model_ref
from service.schemas import ModelPublic, ModelsResponse, ReferencePublic, VersionDetail

router = APIRouter(prefix="/v1/models", tags=["models"])
MUTATING = problems(401, 403, 404, 409, 503)


@router.get("", summary="List models", response_model=ModelsResponse, responses=problems(503))
async def list_models(manager: ManagerDep) -> dict[str, Any]:
    """Every model in the store with its versions and which one is active."""
    models = [describe_model(manager, name) for name in manager.store.names()]
    return {"default_model": manager.default_model, "ready": manager.ready, "models": models}


@router.get(
    "/{name}", summary="Inspect a model", response_model=ModelPublic, responses=problems(404, 503)
)
async def get_model(name: str, manager: ManagerDep) -> dict[str, Any]:
    """Versions, the active one, classes count, grid, provider and test metrics."""
    return describe_model(manager, check_name(name))


@router.get(
    "/{name}/versions/{version}",
    summary="Inspect a model version",
    response_model=VersionDetail,
    responses=problems(404, 503),
)
async def get_version(name: str, version: str, manager: ManagerDep) -> dict[str, Any]:
    """One version's state and its full model card."""
    manager.store.version_dir(check_name(name), check_name(version, "version"))
    return version_detail(manager, name, version)


@router.post(
    "/{name}/versions/{version}/activate",
    summary="Activate (or roll back to) a version",
    response_model=ModelPublic,
    responses=MUTATING,
    dependencies=[ApiKeyDep],
)
async def activate(name: str, version: str, manager: ManagerDep) -> dict[str, Any]:
    """Load, validate and warm up the version, persist it as active, then swap it in.

    A version that fails validation is refused (409) and the current one keeps serving.
    """
    await manager.activate(name, version)
    return describe_model(manager, name)


@router.post(
    "/{name}/reload",
    summary="Reload a model from disk",
    response_model=ModelPublic,
    responses=MUTATING,
    dependencies=[ApiKeyDep],
)
async def reload(name: str, manager: ManagerDep) -> dict[str, Any]:
    """Rebuild the store's active version of `name` and swap it in without dropping requests."""
    await manager.reload(name)
    return describe_model(manager, name)


@router.get(
    "/{name}/references/{label:path}",
    summary="Reference spectrum of a class",
    response_model=ReferencePublic,
    responses=problems(404, 409, 503),
)
async def reference(
    name: str,
    label: str,
    manager: ManagerDep,
    version: Annotated[
        str | None, Query(description="Version; the active one when omitted.")
    ] = None,
) -> dict[str, Any]:
    """The class's reference spectrum on the model grid: the mean of its reference spectra
    (for overlay plots)."""
    async with manager.lease(name, version) as predictor:
        index = predictor.model.index.get(label)
        if index is None:
            raise LabelNotFound(f"model {name!r} has no class {label!r}")
        axis = predictor.model.card.grid.axis
        refs = predictor.model.references[index]
        return {
            "label": label,
            "model": model_ref(predictor),
            "wavenumbers": axis.tolist(),
            "intensities": refs.tolist(),
        }
