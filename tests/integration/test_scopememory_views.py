"""ScopeMemory's views of the edit image: generic, reproducible jitters of the image that the
slot keeps as further positives of its shared rule."""

from __future__ import annotations

import pytest
import torch
from PIL import ImageChops
from tiny_models import TEST_DEVICE
from tiny_models import noise_image as image

from editscope.editors.registry import build_editor
from editscope.editors.scopememory import ScopeMemory, load_memory_preset
from editscope.editors.scopememory.views import image_views, view_seed
from editscope.types import EditRequest


def test_views_are_reproducible_jitters_of_the_image() -> None:
    base = image(5).resize((64, 48))
    first, again = image_views(base, 3, seed=7), image_views(base, 3, seed=7)
    assert len(first) == 3 and all(v.size == base.size and v.mode == "RGB" for v in first)
    assert all(ImageChops.difference(a, b).getbbox() is None for a, b in zip(first, again))
    assert ImageChops.difference(first[0], image_views(base, 1, seed=8)[0]).getbbox() is not None
    assert all(ImageChops.difference(v, base.convert("RGB")).getbbox() is not None for v in first)
    assert image_views(base, 0) == []
    with pytest.raises(ValueError, match="count"):
        image_views(base, -1)


def test_the_view_seed_depends_on_the_fact_and_the_config_seed() -> None:
    fact = torch.arange(32, dtype=torch.uint8)
    assert view_seed(fact, 0) == view_seed(fact.clone(), 0)
    assert view_seed(fact, 0) != view_seed(fact, 1)
    assert view_seed(fact, 0) != view_seed(torch.flip(fact, [0]), 0)


@pytest.fixture(scope="module")
def builtin():
    import editscope

    return editscope.load("builtin", device=str(TEST_DEVICE))


def editor_on(vlm, **changes) -> ScopeMemory:
    from dataclasses import replace

    from editscope.editors.reference import load_reference

    config = replace(load_memory_preset("builtin"), **changes)
    return build_editor("scopememory", vlm, config, reference=load_reference("world", "builtin", 32))


def world_request(scope: str) -> EditRequest:
    from editscope.world import builtin_path, load_world
    from editscope.world.edits import make_records
    from editscope.world.render import fixed_render

    world = load_world(builtin_path())
    record = make_records(world, "dev", 1)[0]
    picture = fixed_render(world.subject(record["subject_index"]), "heldout", 0, world.config.seed)
    return EditRequest(prompt=record["src"], target=record["alt"], image=picture, scope=scope)


def test_a_broad_edit_keeps_its_views_as_positives_and_a_replay_draws_the_same(builtin) -> None:
    request = world_request("broad")
    editor = editor_on(builtin, views=3)
    editor.edit(request)
    also = editor.memory.examples["also"]
    assert also.n == 3 and bool((also["owner"][:3] == 0).all())
    fact = editor.memory.slots["fact"][0]
    # an input showing one of the views passes the slot's shared rule by it
    view = image_views(request.image, 3, seed=view_seed(fact, editor.config.seed))[1]
    assert editor.route_of(view, request.prompt)[0] == 0
    state = editor.state_dict()
    editor.remove()
    replay = editor_on(builtin, views=3)
    replay.edit(request)
    assert torch.equal(replay.state_dict()["scopememory.examples.also.image"],
                       state["scopememory.examples.also.image"])
    replay.remove()


def test_a_view_counts_view_margin_less_near_and_older_states_load(builtin) -> None:
    from editscope.editors.scopememory.router import similarities

    request = world_request("broad")
    editor = editor_on(builtin, views=3, view_margin=0.05)
    editor.edit(request)
    also = editor.memory.examples["also"]
    assert torch.equal(also["offset"], torch.full((3,), -0.05))
    fact = editor.memory.slots["fact"][0]
    view = image_views(request.image, 3, seed=view_seed(fact, editor.config.seed))[1]
    q, v, has = editor._keys(builtin.encode(view, request.prompt))
    near = float(similarities(q, v, has, editor.memory.view()).near[0, 0])
    edit_image = float(v[0] @ editor.memory.slots["image"][0])
    assert float((v[0] @ also["image"].T).max()) > edit_image + 0.05  # the view is its own nearest positive
    assert near == pytest.approx(float((v[0] @ also["image"].T).max()) - 0.05, abs=1e-5)
    state = editor.state_dict()
    editor.remove()
    fresh = editor_on(builtin, views=3)  # the offsets are the slot's, not the config's
    fresh.load_state_dict(state)
    assert torch.equal(fresh.memory.examples["also"]["offset"], torch.full((3,), -0.05))
    # a state written before the offsets: every positive at its cosine
    fresh.load_state_dict({k: t for k, t in state.items() if not k.endswith(".also.offset")})
    assert torch.equal(fresh.memory.examples["also"]["offset"], torch.zeros(3))
    assert torch.equal(fresh.memory.examples["also"]["image"], state["scopememory.examples.also.image"])
    with pytest.raises(ValueError, match="offsets"):
        fresh.load_state_dict({**state, "scopememory.examples.also.offset": torch.full((3,), 0.5)})
    fresh.remove()


def test_an_instance_edit_keeps_no_views(builtin) -> None:
    editor = editor_on(builtin, views=3)
    editor.edit(world_request("instance"))
    assert editor.memory.examples["also"].n == 0
    editor.remove()


def test_views_must_be_a_count() -> None:
    from editscope.editors.scopememory import ScopeMemoryConfig

    with pytest.raises(ValueError, match="views"):
        ScopeMemoryConfig(views=-1)
    with pytest.raises(ValueError, match="views"):
        ScopeMemoryConfig(views=1.5)  # type: ignore[arg-type]


def test_train_views_fits_the_shared_write_to_the_views_too(builtin) -> None:
    from editscope.editors.scopememory import ScopeMemoryConfig
    from editscope.editors.baselines.common import target_loss

    request = world_request("broad")
    losses = {}
    for trained in (0, 2):
        editor = editor_on(builtin, views=2, train_views=trained)
        editor.edit(request)
        fact = editor.memory.slots["fact"][0]
        view = image_views(request.image, 2, seed=view_seed(fact, editor.config.seed))[1]
        with torch.no_grad():
            losses[trained] = float(target_loss(builtin, builtin.encode(view, request.prompt, request.target)))
        editor.remove()
    assert losses[2] < losses[0]
    with pytest.raises(ValueError, match="train_views"):
        ScopeMemoryConfig(views=1, train_views=2)
