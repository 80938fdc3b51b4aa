"""Specification of recipes: loading with ``extends``, overrides, validation, paths, the CLI."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest
import yaml

from toolkit import cli
from toolkit.config import EvalConfig, ScheduleConfig, TrainerConfig
from toolkit.recipe import Recipe, RecipeError, load, load_and_resolve, resolve

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "recipes").glob("*.yaml"))

MINIMAL = """\
name: minimal
data: {name: image-npz, path: images.npz}
augmentation: {name: simclr, size: 32}
encoder: {name: resnet18, stem: cifar}
objective: {name: nt-xent}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def resolve_error(path: Path, plugins, overrides=()) -> str:
    with pytest.raises(RecipeError) as caught:
        load_and_resolve(path, list(overrides), plugins)
    return str(caught.value)


@pytest.fixture
def minimal(tmp_path):
    return write(tmp_path / "recipe.yaml", MINIMAL)


# --- extends ------------------------------------------------------------------------------------


def test_extends_is_relative_to_the_extending_file_not_the_cwd(tmp_path, monkeypatch):
    write(tmp_path / "recipes/base/common.yaml", "trainer: {seed: 7}\n")
    recipe = write(tmp_path / "recipes/run.yaml", "extends: base/common.yaml\n")
    monkeypatch.chdir(tmp_path)
    assert load(recipe).values == {"trainer": {"seed": 7}}


def test_a_base_extends_its_own_bases_relative_to_itself(tmp_path):
    write(tmp_path / "a/b/root.yaml", "trainer: {seed: 1}\n")
    write(tmp_path / "a/middle.yaml", "extends: b/root.yaml\n")
    recipe = write(tmp_path / "top.yaml", "extends: a/middle.yaml\n")
    assert load(recipe).values == {"trainer": {"seed": 1}}


def test_extends_list_merges_bases_in_order_and_a_later_base_wins(tmp_path):
    write(tmp_path / "one.yaml", "trainer: {seed: 1, batch_size: 8}\n")
    write(tmp_path / "two.yaml", "trainer: {seed: 2}\n")
    recipe = write(tmp_path / "run.yaml", "extends: [one.yaml, two.yaml]\n")
    assert load(recipe).values == {"trainer": {"seed": 2, "batch_size": 8}}


def test_the_extending_file_wins_over_its_bases(tmp_path):
    write(tmp_path / "base.yaml", "objective: {name: nt-xent, temperature: 0.5}\n")
    recipe = write(tmp_path / "run.yaml", "extends: base.yaml\nobjective: {temperature: 0.2}\n")
    assert load(recipe).values["objective"] == {"name": "nt-xent", "temperature": 0.2}


def test_a_block_naming_another_component_replaces_the_base_block(tmp_path):
    write(tmp_path / "base.yaml", "projector: {name: mlp, hidden_dim: 64}\n")
    recipe = write(tmp_path / "run.yaml", "extends: base.yaml\nprojector: {name: identity}\n")
    assert load(recipe).values["projector"] == {"name": "identity"}


def test_extends_deep_merges_nested_mappings(tmp_path):
    write(tmp_path / "base.yaml", "eval: {train_data: {limit: 10, split: train}, batch_size: 4}\n")
    recipe = write(tmp_path / "run.yaml", "extends: base.yaml\neval: {train_data: {limit: 20}}\n")
    assert load(recipe).values["eval"] == {"train_data": {"limit": 20, "split": "train"}, "batch_size": 4}


def test_extends_replaces_lists_instead_of_merging_them(tmp_path):
    write(tmp_path / "base.yaml", "eval: {evaluators: [{name: knn, k: 200}, {name: linear-probe}]}\n")
    recipe = write(tmp_path / "run.yaml", "extends: base.yaml\neval: {evaluators: [{name: knn, k: 5}]}\n")
    assert load(recipe).values["eval"]["evaluators"] == [{"name": "knn", "k": 5}]


def test_extends_key_is_not_part_of_the_loaded_recipe(tmp_path):
    write(tmp_path / "base.yaml", "name: base\n")
    recipe = write(tmp_path / "run.yaml", "extends: base.yaml\n")
    assert "extends" not in load(recipe).values


def test_extends_cycle_is_an_error_that_shows_the_chain(tmp_path):
    first = write(tmp_path / "first.yaml", "extends: second.yaml\n")
    second = write(tmp_path / "second.yaml", "extends: [first.yaml]\n")
    with pytest.raises(RecipeError, match="cycle") as caught:
        load(first)
    assert f"{first.resolve()} -> {second.resolve()} -> {first.resolve()}" in str(caught.value)


def test_a_recipe_extending_itself_is_a_cycle(tmp_path):
    recipe = write(tmp_path / "self.yaml", "extends: self.yaml\n")
    with pytest.raises(RecipeError, match="cycle"):
        load(recipe)


def test_missing_base_names_the_extending_file_and_the_missing_one(tmp_path):
    recipe = write(tmp_path / "run.yaml", "extends: nowhere/base.yaml\n")
    with pytest.raises(RecipeError) as caught:
        load(recipe)
    message = str(caught.value)
    assert str(recipe.resolve()) in message
    assert f"recipe file not found: {(tmp_path / 'nowhere/base.yaml').resolve()}" in message


def test_missing_recipe_file_is_a_recipe_error(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load(tmp_path / "absent.yaml")


def test_extends_must_be_a_path_or_a_list_of_paths(tmp_path):
    recipe = write(tmp_path / "run.yaml", "name: x\nextends: {base: a.yaml}\n")
    with pytest.raises(RecipeError, match="expected a path or a list of paths") as caught:
        load(recipe)
    assert f"{recipe.resolve()}:2" in str(caught.value)


def test_invalid_yaml_names_the_file_and_line(tmp_path):
    recipe = write(tmp_path / "run.yaml", "name: x\ntrainer: {seed: 1\nschedule: {}\n")
    with pytest.raises(RecipeError, match="not valid YAML") as caught:
        load(recipe)
    assert f"{recipe.resolve()}:" in str(caught.value)


def test_a_recipe_must_be_a_mapping(tmp_path):
    recipe = write(tmp_path / "run.yaml", "- data\n- encoder\n")
    with pytest.raises(RecipeError, match="must be a mapping of sections, got list"):
        load(recipe)


# --- a recipe cannot run code -------------------------------------------------------------------


def test_a_python_tag_in_a_recipe_file_is_rejected_not_executed(tmp_path):
    marker = tmp_path / "executed"
    recipe = write(tmp_path / "run.yaml", f"name: x\nobjective: !!python/object/apply:os.mkdir ['{marker}']\n")
    with pytest.raises(RecipeError, match="not valid YAML") as caught:
        load(recipe)
    assert f"{recipe.resolve()}:2" in str(caught.value)
    assert not marker.exists()


def test_a_python_tag_in_an_override_is_rejected_not_executed(minimal, tmp_path):
    marker = tmp_path / "executed"
    override = f"objective=!!python/object/apply:os.mkdir ['{marker}']"
    with pytest.raises(RecipeError, match="value is not valid YAML"):
        load(minimal, [override])
    assert not marker.exists()


# --- overrides ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, key, expected",
    [
        ("trainer.seed=3", "seed", 3),
        ("trainer.clip_grad_norm=1.5", "clip_grad_norm", 1.5),
        ("trainer.device=cuda:1", "device", "cuda:1"),
        ("trainer.output_dir=null", "output_dir", None),
        ("trainer.scale=[0.2, 1.0]", "scale", [0.2, 1.0]),
        ("trainer.block={a: 1, b: [x]}", "block", {"a": 1, "b": ["x"]}),
    ],
    ids=["int", "float", "string", "null", "list", "mapping"],
)
def test_override_values_are_parsed_as_yaml(minimal, override, key, expected):
    assert load(minimal, [override]).values["trainer"][key] == expected


def test_override_in_exponent_notation_is_a_float(minimal):
    assert load(minimal, ["optimizer.lr=1e-3"]).values["optimizer"]["lr"] == 0.001


def test_override_replaces_a_value_set_by_the_file(minimal):
    assert load(minimal, ["augmentation.size=64"]).values["augmentation"] == {"name": "simclr", "size": 64}


def test_override_creates_missing_sections(minimal):
    assert load(minimal, ["schedule.max_steps=5"]).values["schedule"] == {"max_steps": 5}


def test_later_overrides_win(minimal):
    assert load(minimal, ["trainer.seed=1", "trainer.seed=2"]).values["trainer"]["seed"] == 2


def test_override_can_replace_a_whole_block(minimal):
    values = load(minimal, ["objective={name: nt-xent, temperature: 0.1}"]).values
    assert values["objective"] == {"name": "nt-xent", "temperature": 0.1}


def test_override_indexes_into_a_list(tmp_path):
    recipe = write(tmp_path / "run.yaml", MINIMAL + "eval: {evaluators: [{name: knn, k: 200}, {name: linear-probe}]}\n")
    evaluators = load(recipe, ["eval.evaluators.0.k=5"]).values["eval"]["evaluators"]
    assert evaluators == [{"name": "knn", "k": 5}, {"name": "linear-probe"}]


def test_override_index_equal_to_the_list_length_appends(tmp_path):
    recipe = write(tmp_path / "run.yaml", MINIMAL + "eval: {evaluators: [{name: knn}]}\n")
    evaluators = load(recipe, ["eval.evaluators.1={name: linear-probe}"]).values["eval"]["evaluators"]
    assert evaluators == [{"name": "knn"}, {"name": "linear-probe"}]


def test_override_index_past_the_end_of_a_list_is_an_error(tmp_path):
    recipe = write(tmp_path / "run.yaml", MINIMAL + "eval: {evaluators: [{name: knn}]}\n")
    with pytest.raises(RecipeError, match=r"override 'eval.evaluators.3.k=5': eval.evaluators.3 is not an index"):
        load(recipe, ["eval.evaluators.3.k=5"])


def test_override_with_a_name_where_a_list_index_is_needed_is_an_error(tmp_path):
    recipe = write(tmp_path / "run.yaml", MINIMAL + "eval: {evaluators: [{name: knn}]}\n")
    with pytest.raises(RecipeError, match=r"override 'eval.evaluators.k=5'"):
        load(recipe, ["eval.evaluators.k=5"])


@pytest.mark.parametrize("override", ["trainer.seed", "=3", ""])
def test_override_without_key_and_value_is_malformed(minimal, override):
    with pytest.raises(RecipeError, match=r"expected key\.path=value"):
        load(minimal, [override])


def test_override_with_an_empty_key_segment_is_malformed(minimal):
    with pytest.raises(RecipeError, match=r"override 'trainer\.\.seed=1'"):
        load(minimal, ["trainer..seed=1"])


def test_override_with_invalid_yaml_value_is_an_error(minimal):
    with pytest.raises(RecipeError, match=r"override 'trainer.seed=\[1': value is not valid YAML"):
        load(minimal, ["trainer.seed=[1"])


# --- resolution: defaults -----------------------------------------------------------------------


def test_resolve_fills_every_component_default(minimal, plugins):
    values = load_and_resolve(minimal, [], plugins).values
    assert values["objective"] == {"name": "nt-xent", "temperature": 0.5}
    assert values["augmentation"]["n_views"] == 2
    assert values["encoder"]["width"] == 64


def test_projector_defaults_to_identity(minimal, plugins):
    assert load_and_resolve(minimal, [], plugins).values["projector"] == {"name": "identity"}


def test_optimizer_defaults_to_sgd_with_its_defaults(minimal, plugins):
    optimizer = load_and_resolve(minimal, [], plugins).values["optimizer"]
    assert optimizer == {"name": "sgd", "lr": 0.03, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": False}


def test_engine_sections_default_to_their_dataclass_defaults(minimal, plugins):
    recipe = load_and_resolve(minimal, [], plugins)
    assert recipe.settings("trainer") == TrainerConfig()
    assert recipe.settings("schedule") == ScheduleConfig()
    assert recipe.settings("eval") == EvalConfig()


def test_name_defaults_to_the_file_stem(tmp_path, plugins):
    recipe = write(tmp_path / "my-run.yaml", MINIMAL.replace("name: minimal\n", ""))
    assert load_and_resolve(recipe, [], plugins).name == "my-run"


def test_tuples_become_yaml_lists(minimal, plugins):
    assert load_and_resolve(minimal, [], plugins).values["augmentation"]["scale"] == [0.08, 1.0]


# --- resolution: errors -------------------------------------------------------------------------


def test_unknown_section_names_file_line_key_and_close_match(tmp_path, plugins):
    recipe = write(tmp_path / "recipe.yaml", MINIMAL + "encodr: {width: 4}\n")
    message = resolve_error(recipe, plugins)
    assert f"{recipe.resolve()}:6: encodr: unknown section" in message
    assert "did you mean 'encoder'" in message


def test_unknown_key_in_a_component_names_file_line_dotted_key_and_close_match(tmp_path, plugins):
    recipe = write(tmp_path / "recipe.yaml", """\
        name: minimal
        data: {name: image-npz, path: images.npz}
        augmentation: {name: simclr}
        objective: {name: nt-xent}
        encoder:
          name: resnet18
          widht: 4
        """)
    message = resolve_error(recipe, plugins)
    assert f"{recipe.resolve()}:7: encoder.widht: unknown key" in message
    assert "did you mean 'width'" in message


def test_unknown_key_in_an_engine_section_names_the_dotted_key(tmp_path, plugins):
    recipe = write(tmp_path / "recipe.yaml", MINIMAL + "trainer:\n  sed: 1\n")
    message = resolve_error(recipe, plugins)
    assert f"{recipe.resolve()}:7: trainer.sed: unknown key; did you mean 'seed'" in message


def test_unknown_key_inside_a_list_entry_names_the_index(tmp_path, plugins):
    recipe = write(tmp_path / "recipe.yaml", MINIMAL + "eval:\n  evaluators:\n    - {name: knn}\n    - {name: knn, kk: 3}\n")
    message = resolve_error(recipe, plugins)
    assert f"{recipe.resolve()}:9: eval.evaluators.1.kk: unknown key; did you mean 'k'" in message


def test_error_in_a_base_names_the_base_file_and_its_line(tmp_path, plugins):
    base = write(tmp_path / "base/common.yaml", "trainer:\n  batch_size: 64\n  seeed: 3\n")
    recipe = write(tmp_path / "recipe.yaml", "extends: base/common.yaml\n" + MINIMAL)
    assert f"{base.resolve()}:3: trainer.seeed" in resolve_error(recipe, plugins)


def test_wrong_type_says_the_expected_type(tmp_path, plugins):
    recipe = write(tmp_path / "recipe.yaml", MINIMAL + "trainer: {batch_size: many}\n")
    message = resolve_error(recipe, plugins)
    assert f"{recipe.resolve()}:6: trainer.batch_size: expected int (>= 1), got str 'many'" in message


def test_a_bool_is_not_accepted_for_an_int_parameter(minimal, plugins):
    assert "trainer.seed: expected int (>= 0 and < 9223372036854775808), got bool True" in resolve_error(minimal, plugins, ["trainer.seed=true"])


def test_unknown_component_lists_close_matches(tmp_path, plugins):
    recipe = write(tmp_path / "recipe.yaml", MINIMAL.replace("name: resnet18", "name: resnet81"))
    message = resolve_error(recipe, plugins)
    assert f"{recipe.resolve()}:4: encoder.name: no encoder named 'resnet81'" in message
    assert "Did you mean 'resnet18'" in message


def test_unknown_optimizer_lists_the_known_ones(minimal, plugins):
    message = resolve_error(minimal, plugins, ["optimizer.name=lasr"])
    assert "optimizer.name: no optimizer named 'lasr'. Did you mean 'lars'?" in message
    assert "Did you mean 'lars'? Registered optimizers: adamw, adamw-towers, lars, sgd" in message


def test_component_block_without_a_name_is_an_error(tmp_path, plugins):
    recipe = write(tmp_path / "recipe.yaml", MINIMAL.replace("{name: nt-xent}", "{temperature: 0.1}"))
    message = resolve_error(recipe, plugins)
    assert f"{recipe.resolve()}:5: objective: expected a mapping with a `name` (one of: " in message
    assert "nt-xent" in message


def test_missing_required_section_is_named(tmp_path, plugins):
    recipe = write(tmp_path / "recipe.yaml", MINIMAL.replace("encoder: {name: resnet18, stem: cifar}\n", ""))
    assert "missing required section 'encoder'" in resolve_error(recipe, plugins)


def test_missing_required_parameter_is_named_with_its_type(tmp_path, plugins):
    recipe = write(tmp_path / "recipe.yaml", MINIMAL.replace(", path: images.npz", ""))
    message = resolve_error(recipe, plugins)
    assert f"{recipe.resolve()}:2: data.path: missing required key (expected path)" in message


def test_injected_parameters_cannot_be_set_by_a_recipe(tmp_path, plugins):
    recipe = write(tmp_path / "recipe.yaml", MINIMAL + "projector: {name: mlp, input_dim: 8}\n")
    assert "projector.input_dim: unknown key" in resolve_error(recipe, plugins)


def test_error_for_a_key_set_by_an_override_names_the_override(minimal, plugins):
    message = resolve_error(minimal, plugins, ["encoder.widht=4"])
    assert message.startswith("override 'encoder.widht=4': encoder.widht: unknown key; did you mean 'width'")


def test_wrong_type_from_an_override_names_the_override(minimal, plugins):
    message = resolve_error(minimal, plugins, ["augmentation.size=big"])
    assert message.startswith("override 'augmentation.size=big': augmentation.size: expected int")


def test_error_under_a_mapping_created_by_an_override_names_the_override(minimal, plugins):
    message = resolve_error(minimal, plugins, ["encoder.extra.depth=1"])
    assert message.startswith("override 'encoder.extra.depth=1': encoder.extra: unknown key")


# --- resolution: paths --------------------------------------------------------------------------


def test_path_parameter_is_relative_to_the_recipe_file(tmp_path, monkeypatch, plugins):
    recipe = write(tmp_path / "recipes/run.yaml", MINIMAL)
    monkeypatch.chdir(tmp_path)
    path = load_and_resolve(recipe, [], plugins).values["data"]["path"]
    assert path == str((tmp_path / "recipes/images.npz").resolve())


def test_path_set_in_a_base_is_relative_to_the_base(tmp_path, plugins):
    write(tmp_path / "base/common.yaml", "data: {name: image-npz, path: ../data/images.npz}\n")
    recipe = write(tmp_path / "recipes/deep/run.yaml", "extends: ../../base/common.yaml\n" +
                   MINIMAL.replace("data: {name: image-npz, path: images.npz}\n", ""))
    path = load_and_resolve(recipe, [], plugins).values["data"]["path"]
    assert path == str((tmp_path / "data/images.npz").resolve())


def test_path_from_an_override_is_relative_to_the_cwd(minimal, tmp_path, monkeypatch, plugins):
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    path = load_and_resolve(minimal, ["data.path=other.npz"], plugins).values["data"]["path"]
    assert path == str((tmp_path / "elsewhere/other.npz").resolve())


def test_absolute_path_is_kept(tmp_path, plugins):
    target = tmp_path / "abs/images.npz"
    recipe = write(tmp_path / "recipes/run.yaml", MINIMAL.replace("path: images.npz", f"path: {target}"))
    assert load_and_resolve(recipe, [], plugins).values["data"]["path"] == str(target.resolve())


def test_optional_path_left_at_its_default_stays_null(minimal, plugins):
    assert load_and_resolve(minimal, [], plugins).values["encoder"]["weights"] is None


def test_resolving_does_not_require_the_data_to_exist(minimal, plugins):
    path = Path(load_and_resolve(minimal, [], plugins).values["data"]["path"])
    assert not path.exists()


# --- resolution: eval ---------------------------------------------------------------------------


def test_eval_data_splits_default_to_train_and_test(minimal, plugins):
    values = load_and_resolve(minimal, [], plugins).values["eval"]
    assert values["train_data"] == {"split": "train"}
    assert values["test_data"] == {"split": "test"}


def test_eval_data_keeps_given_settings_and_adds_the_default_split(tmp_path, plugins):
    recipe = write(tmp_path / "recipe.yaml", MINIMAL + "eval: {train_data: {limit: 256}, test_data: {split: val}}\n")
    values = load_and_resolve(recipe, [], plugins).values["eval"]
    assert values["train_data"] == {"split": "train", "limit": 256}
    assert values["test_data"] == {"split": "val"}


def test_eval_data_rejects_a_key_that_is_not_a_data_source_parameter(tmp_path, plugins):
    recipe = write(tmp_path / "recipe.yaml", MINIMAL + "eval:\n  train_data:\n    name: image-folder\n")
    message = resolve_error(recipe, plugins)
    assert f"{recipe.resolve()}:8: eval.train_data.name: not a parameter of data source 'image-npz'" in message


def test_eval_data_values_are_type_checked(minimal, plugins):
    message = resolve_error(minimal, plugins, ["eval.test_data.limit=all"])
    assert "eval.test_data.limit: expected int or null" in message


def test_eval_data_path_is_relative_to_the_file_that_set_it(tmp_path, plugins):
    recipe = write(tmp_path / "recipes/run.yaml", MINIMAL + "eval: {test_data: {path: test.npz}}\n")
    test_data = load_and_resolve(recipe, [], plugins).values["eval"]["test_data"]
    assert test_data["path"] == str((tmp_path / "recipes/test.npz").resolve())


def test_evaluators_are_resolved_with_their_defaults(tmp_path, plugins):
    recipe = write(tmp_path / "recipe.yaml", MINIMAL + "eval: {evaluators: [{name: knn, k: 20}]}\n")
    evaluators = load_and_resolve(recipe, [], plugins).values["eval"]["evaluators"]
    assert evaluators == [{"name": "knn", "k": 20, "temperature": 0.07}]


def test_unknown_evaluator_lists_close_matches(minimal, plugins):
    message = resolve_error(minimal, plugins, ["eval.evaluators=[{name: kn}]"])
    assert "eval.evaluators.0.name: no evaluator named 'kn'. Did you mean 'knn'?" in message


# --- Recipe.to_yaml -----------------------------------------------------------------------------


@pytest.fixture
def resolved(tmp_path, plugins) -> Recipe:
    recipe = write(tmp_path / "recipe.yaml", MINIMAL + "eval: {evaluators: [{name: knn}], train_data: {limit: 5}}\n")
    return load_and_resolve(recipe, ["augmentation.scale=[0.2, 1.0]"], plugins)


def test_to_yaml_round_trips_through_safe_load(resolved):
    assert yaml.safe_load(resolved.to_yaml()) == resolved.values


def test_to_yaml_re_resolves_to_the_same_values(resolved, tmp_path, plugins):
    again = write(tmp_path / "elsewhere/again.yaml", resolved.to_yaml())
    assert resolve(load(again), plugins).values == resolved.values


# --- the shipped recipes ------------------------------------------------------------------------


@pytest.mark.parametrize("shipped", SHIPPED, ids=lambda p: p.name)
def test_shipped_recipe_resolves_with_the_default_plugins(shipped, plugins):
    assert load_and_resolve(shipped, [], plugins).name == shipped.stem


@pytest.mark.parametrize("shipped", SHIPPED, ids=lambda p: p.name)
def test_shipped_recipe_resolves_where_its_data_does_not_exist(shipped, tmp_path, plugins):
    copy = tmp_path / "checkout/recipes"
    shutil.copytree(REPO / "recipes", copy)
    recipe = load_and_resolve(copy / shipped.name, [], plugins)
    assert not Path(recipe.values["data"]["path"]).exists()


def test_shipped_recipes_are_found():
    assert {p.name for p in SHIPPED} >= {"quickstart.yaml", "simclr-cifar10.yaml", "tiny.yaml"}


# --- the command line ---------------------------------------------------------------------------


def test_recipe_show_prints_the_resolved_recipe_with_overrides_and_defaults(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert cli.main(["recipe", "show", "recipes/simclr-cifar10.yaml", "objective.temperature=0.1"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["objective"]["temperature"] == 0.1
    assert shown["trainer"]["seed"] == 0
    assert shown["projector"]["layers"] == 2


def test_recipe_show_prints_every_default(capsys, monkeypatch, plugins):
    monkeypatch.chdir(REPO)
    cli.main(["recipe", "show", "recipes/simclr-cifar10.yaml"])
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown == load_and_resolve(REPO / "recipes/simclr-cifar10.yaml", [], plugins).values


def test_recipe_validate_reports_a_valid_recipe(minimal, capsys):
    assert cli.main(["recipe", "validate", str(minimal)]) == 0
    assert capsys.readouterr().out == f"{minimal}: valid (minimal)\n"


def test_recipe_validate_on_a_broken_recipe_exits_2_naming_file_and_key(tmp_path, capsys):
    recipe = write(tmp_path / "broken.yaml", MINIMAL + "trainer: {batch_sise: 8}\n")
    assert cli.main(["recipe", "validate", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {recipe.resolve()}:6: trainer.batch_sise: unknown key")


def test_recipe_validate_on_a_broken_override_exits_2_naming_the_override(minimal, capsys):
    assert cli.main(["recipe", "validate", str(minimal), "trainer.seed=x"]) == 2
    assert capsys.readouterr().err.startswith("error: override 'trainer.seed=x': trainer.seed: expected int")
