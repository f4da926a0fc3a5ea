"""The experiment file: WML's `hyper_parameters_optimization` YAML read safely into a validated
`ExperimentSpec`, errors naming the field.

Two shapes are accepted: the section at the top level (beside an optional `name:` and
`description:`), or WML's experiment definition (`settings:` plus one `training_references:`
entry holding the section). `rbfopt`, the original's model-based method, runs as Optuna's TPE.
"""

from __future__ import annotations

import itertools
import keyword
import math
from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Any

from common.fields import FieldReader
from common.fields import join as _join
from common.fields import kind as _kind
from common.manifest import ManifestError, load_yaml

MAX_HYPER_PARAMETERS = 20
MAX_CHOICES = 1000
MAX_NAME_LENGTH = 64
DEFAULT_MAX_GRID_TRIALS = 1000
# Optuna samples integers through floats: beyond 2**53 they would not come back exact.
MAX_INT = 2**53
# Optuna's samplers seed numpy, which takes 0 <= seed < 2**32.
MAX_SEED = 2**32 - 1

# Method name as users write it -> the Optuna sampler class that runs it.
SAMPLERS = {
    "grid": "GridSampler",
    "random": "RandomSampler",
    "tpe": "TPESampler",
    "rbfopt": "TPESampler",
}
EARLY_STOPPING_METHODS = ("median",)
DIRECTIONS = ("maximize", "minimize")
RANGE_KINDS = ("int_range", "double_range")
VALUES_KINDS = ("int_values", "double_values", "string_values")
VALUE_KEYS = ("string_value", "int_value", "double_value")
# Method parameter name -> the value key it takes.
METHOD_PARAMETERS = {
    "objective": "string_value",
    "maximize_or_minimize": "string_value",
    "num_optimizer_steps": "int_value",
    "time_interval": "int_value",
}
SECTION_KEYS = (
    "method",
    "hyper_parameters",
    "max_concurrent_trials",
    "max_failed_trials",
    "target",
    "early_stopping",
    "seed",
)


class ExperimentError(ValueError):
    """An experiment file problem, phrased `field.path: what is wrong`."""

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}" if field else problem)


@dataclass(frozen=True)
class HyperParameter:
    """One searched parameter. Ranges have low/high (step, or log from `power`); value lists
    have choices. `kind` is the key the user wrote (`int_range`, `double_values`, ...)."""

    name: str
    kind: str
    low: int | float | None = None
    high: int | float | None = None
    step: int | float | None = None
    log: bool = False
    choices: tuple[int | float | str, ...] = ()
    # The range's `power` as given: grid points are low * power**k; sampling is log-uniform.
    power: int | float | None = None

    @property
    def finite(self) -> bool:
        """Whether the parameter has a countable set of values (a grid can walk it)."""
        return self.kind != "double_range" or self.step is not None or self.power is not None

    def count(self) -> int:
        """How many values it has (finite parameters only), without listing them."""
        if self.kind in VALUES_KINDS:
            return len(self.choices)
        if not self.finite:
            raise ValueError(f"{self.name}: a double_range without step or power is not finite")
        with localcontext() as ctx:
            # Wide enough for any ratio of two doubles, so // never runs out of digits.
            ctx.prec = 800
            low, high = _decimal(self.low), _decimal(self.high)
            if self.power is None:
                return int((high - low) // _decimal(self.step or 1)) + 1
            power = _decimal(self.power)
            steps = int(math.log(float(high / low)) / math.log(float(power)))
            # The float estimate can be one off at the edge: settle it exactly.
            while low * power ** (steps + 1) <= high:
                steps += 1
            while steps > 0 and low * power**steps > high:
                steps -= 1
            return steps + 1

    def values(self) -> tuple[int | float | str, ...]:
        """Every value, in order (finite parameters only): min, min+step, ... or min*power**k."""
        if self.kind in VALUES_KINDS:
            return self.choices
        count = self.count()
        cast = int if self.kind == "int_range" else float
        with localcontext() as ctx:
            ctx.prec = 800
            # Decimal on the numbers as written: 0.005 + 3 * 0.01 is 0.035, not 0.035000000004.
            low = _decimal(self.low)
            if self.power is None:
                step = _decimal(self.step or 1)
                return tuple(cast(low + k * step) for k in range(count))
            power = _decimal(self.power)
            return tuple(cast(low * power**k) for k in range(count))

    def top(self) -> int | float:
        """The highest value a step range reaches: min + k*step <= max (high for others)."""
        if self.step is None:
            return self.high
        cast = int if self.kind == "int_range" else float
        with localcontext() as ctx:
            ctx.prec = 800
            return cast(_decimal(self.low) + (self.count() - 1) * _decimal(self.step))

    def snap(self, value: float) -> float:
        """A stepped double range's value as its user would write it: Optuna gives
        0.35000000000000003 for 0.05 + 6 * 0.05; this is 0.35 (the point k steps from min)."""
        if self.kind != "double_range" or self.step is None:
            return value
        with localcontext() as ctx:
            ctx.prec = 800
            low, step = _decimal(self.low), _decimal(self.step)
            k = round((_decimal(value) - low) / step)
            return float(low + k * step)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "low": self.low,
            "high": self.high,
            "step": self.step,
            "log": self.log,
            "choices": list(self.choices),
            "power": self.power,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HyperParameter:
        return cls(
            name=data["name"],
            kind=data["kind"],
            low=data.get("low"),
            high=data.get("high"),
            step=data.get("step"),
            log=bool(data.get("log", False)),
            choices=tuple(data.get("choices", ())),
            power=data.get("power"),
        )


@dataclass(frozen=True)
class EarlyStopping:
    """Stop a trial whose objective is worse than the median of earlier trials at that step
    (Optuna's MedianPruner), once `startup_trials` have completed and from `warmup_steps` on."""

    method: str = "median"
    startup_trials: int = 3
    warmup_steps: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "startup_trials": self.startup_trials,
            "warmup_steps": self.warmup_steps,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EarlyStopping:
        return cls(data["method"], int(data["startup_trials"]), int(data["warmup_steps"]))


@dataclass(frozen=True)
class ExperimentSpec:
    name: str
    method: str  # as the user wrote it (`rbfopt`)
    sampler: str  # the Optuna sampler class that runs it (`TPESampler`)
    objective: str  # the metric's name
    direction: str  # "maximize" | "minimize"
    trials: int  # how many trials to run in all
    hyper_parameters: tuple[HyperParameter, ...]
    description: str = ""
    author_name: str = ""
    author_email: str = ""
    max_concurrent_trials: int = 2
    # The experiment fails once more trials than this have failed.
    max_failed_trials: int = 3
    # The experiment ends COMPLETED once a trial's objective reaches this.
    target: float | None = None
    early_stopping: EarlyStopping | None = None
    seed: int | None = None
    # method.parameters' time_interval (seconds), kept as given.
    time_interval: int | None = None

    def grid_values(self) -> dict[str, list[int | float | str]]:
        """Each hyperparameter's values, for a grid (every one must be finite)."""
        return {hp.name: list(hp.values()) for hp in self.hyper_parameters}

    def grid_size(self) -> int:
        return math.prod(hp.count() for hp in self.hyper_parameters)

    def grid(self) -> list[dict[str, int | float | str]]:
        """Every grid point, in a stable order: the product of the values, the first
        hyperparameter varying slowest."""
        if self.method != "grid":
            raise ValueError(f"a {self.method} experiment has no grid")
        names = [hp.name for hp in self.hyper_parameters]
        return [
            dict(zip(names, point, strict=True))
            for point in itertools.product(*(hp.values() for hp in self.hyper_parameters))
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "author": {"name": self.author_name, "email": self.author_email},
            "method": self.method,
            "sampler": self.sampler,
            "objective": self.objective,
            "direction": self.direction,
            "trials": self.trials,
            "max_concurrent_trials": self.max_concurrent_trials,
            "max_failed_trials": self.max_failed_trials,
            "target": self.target,
            "early_stopping": self.early_stopping.to_dict() if self.early_stopping else None,
            "seed": self.seed,
            "time_interval": self.time_interval,
            "hyper_parameters": [hp.to_dict() for hp in self.hyper_parameters],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentSpec:
        author = data.get("author") or {}
        early = data.get("early_stopping")
        target = data.get("target")
        return cls(
            name=data.get("name", ""),
            description=data.get("description", ""),
            author_name=author.get("name", ""),
            author_email=author.get("email", ""),
            method=data["method"],
            sampler=data["sampler"],
            objective=data["objective"],
            direction=data["direction"],
            trials=int(data["trials"]),
            max_concurrent_trials=int(data.get("max_concurrent_trials", 2)),
            max_failed_trials=int(data.get("max_failed_trials", 3)),
            target=None if target is None else float(target),
            early_stopping=EarlyStopping.from_dict(early) if early else None,
            seed=data.get("seed"),
            time_interval=data.get("time_interval"),
            hyper_parameters=tuple(HyperParameter.from_dict(h) for h in data["hyper_parameters"]),
        )


def parse_experiment(
    text: str | bytes, max_grid_trials: int = DEFAULT_MAX_GRID_TRIALS
) -> ExperimentSpec:
    """The experiment in `text`; a grid may have at most `max_grid_trials` points."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ExperimentError("", "not UTF-8 text") from None
    try:
        doc = load_yaml(text)
    except ManifestError as exc:
        raise ExperimentError(exc.field, exc.problem) from None
    return _Reader(max_grid_trials).experiment(doc)


class _Reader(FieldReader):
    """Walks the parsed document once, raising an ExperimentError at the first bad field."""

    error = ExperimentError

    def __init__(self, max_grid_trials: int):
        self.max_grid_trials = max_grid_trials

    # -- the document's shapes ------------------------------------------------------------

    def experiment(self, doc: Any) -> ExperimentSpec:
        if doc is None:
            raise ExperimentError("", "the experiment file is empty")
        if isinstance(doc, dict) and ("settings" in doc or "training_references" in doc):
            return self.definition(doc)
        top = self.mapping(doc, "", ("name", "description", "hyper_parameters_optimization"))
        if top.get("hyper_parameters_optimization") is None:
            raise ExperimentError(
                "hyper_parameters_optimization",
                "required (or WML's settings and training_references)",
            )
        return self.section(
            top["hyper_parameters_optimization"],
            "hyper_parameters_optimization",
            name=self.text(top, "name", "", required=False),
            description=self.text(top, "description", "", required=False),
        )

    def definition(self, doc: dict) -> ExperimentSpec:
        """WML's experiment definition: settings plus exactly one training reference."""
        top = self.mapping(doc, "", ("settings", "training_references"))
        if top.get("settings") is None:
            raise ExperimentError("settings", "required")
        settings = self.mapping(top["settings"], "settings", ("name", "description", "author"))
        author_name = author_email = ""
        if settings.get("author") is not None:
            author = self.mapping(settings["author"], "settings.author", ("name", "email"))
            author_name = self.text(author, "name", "settings.author", required=False)
            author_email = self.text(author, "email", "settings.author", required=False)
        refs = top.get("training_references")
        if refs is None:
            raise ExperimentError("training_references", "required")
        if not isinstance(refs, list):
            raise ExperimentError(
                "training_references", f"expected a list of one reference, got {_kind(refs)}"
            )
        if len(refs) != 1:
            raise ExperimentError(
                "training_references",
                f"exactly one training reference is supported, got {len(refs)}",
            )
        # Its name, training definition and compute configuration are the original's; here
        # the run's manifest says what to train and on what.
        ref = self.mapping(
            refs[0],
            "training_references[0]",
            (
                "name",
                "training_definition_url",
                "compute_configuration",
                "hyper_parameters_optimization",
            ),
        )
        where = "training_references[0].hyper_parameters_optimization"
        if ref.get("hyper_parameters_optimization") is None:
            raise ExperimentError(where, "required")
        return self.section(
            ref["hyper_parameters_optimization"],
            where,
            name=self.text(settings, "name", "settings"),
            description=self.text(settings, "description", "settings", required=False),
            author_name=author_name,
            author_email=author_email,
        )

    def section(self, value: Any, path: str, **about: str) -> ExperimentSpec:
        """hyper_parameters_optimization: the method, the hyperparameters, the limits."""
        hpo = self.mapping(value, path, SECTION_KEYS)
        method, sampler, parameters = self.method(hpo, path)
        hps = self.hyper_parameters(hpo, _join(path, "hyper_parameters"), method)
        steps_path = _join(path, "method.parameters")
        trials = parameters.get("num_optimizer_steps")
        if method == "grid":
            size = math.prod(hp.count() for hp in hps)
            if size > self.max_grid_trials:
                raise ExperimentError(
                    _join(path, "hyper_parameters"),
                    f"the grid has {size} points, more than the limit of {self.max_grid_trials}",
                )
            if trials is None:
                trials = size
            elif trials > size:
                raise ExperimentError(
                    steps_path,
                    f"num_optimizer_steps {trials} is more than the grid's {size} points",
                )
        elif trials is None:
            trials = 10
        return ExperimentSpec(
            method=method,
            sampler=sampler,
            objective=parameters["objective"],
            direction=parameters.get("maximize_or_minimize", "maximize"),
            trials=trials,
            hyper_parameters=hps,
            max_concurrent_trials=self.integer(hpo, "max_concurrent_trials", path, 1, default=2),
            max_failed_trials=self.integer(hpo, "max_failed_trials", path, 0, default=3),
            target=self.target(hpo, path),
            early_stopping=self.early_stopping(hpo, path),
            seed=self.integer(hpo, "seed", path, 0, default=None, maximum=MAX_SEED),
            time_interval=parameters.get("time_interval"),
            **about,
        )

    # -- method ---------------------------------------------------------------------------

    def method(self, hpo: dict, path: str) -> tuple[str, str, dict[str, Any]]:
        """method: its name and its parameters (objective, direction, trials, interval)."""
        where = _join(path, "method")
        if hpo.get("method") is None:
            raise ExperimentError(where, "required")
        method = self.mapping(hpo["method"], where, ("name", "parameters"))
        name = self.text(method, "name", where)
        if name not in SAMPLERS:
            raise ExperimentError(
                _join(where, "name"),
                f"unknown method {name!r} (known: {', '.join(SAMPLERS)})",
            )
        entries = method.get("parameters")
        list_path = _join(where, "parameters")
        if entries is None:
            entries = []
        if not isinstance(entries, list):
            raise ExperimentError(list_path, f"expected a list, got {_kind(entries)}")
        parameters: dict[str, Any] = {}
        for index, entry in enumerate(entries):
            item = f"{list_path}[{index}]"
            param_name, value_key, value = self.method_parameter(entry, item)
            if param_name in parameters:
                raise ExperimentError(_join(item, "name"), f"{param_name} is given twice")
            parameters[param_name] = self.method_value(param_name, value_key, value, item)
        if "objective" not in parameters:
            raise ExperimentError(
                list_path, "the objective is required (name: objective, string_value: <metric>)"
            )
        return name, SAMPLERS[name], parameters

    def method_parameter(self, entry: Any, item: str) -> tuple[str, str, Any]:
        """One `{name, <kind>_value}` entry, exactly one value given."""
        fields = self.mapping(entry, item, ("name", *VALUE_KEYS))
        param_name = self.text(fields, "name", item)
        if param_name not in METHOD_PARAMETERS:
            raise ExperimentError(
                _join(item, "name"),
                f"unknown parameter {param_name!r} (known: {', '.join(METHOD_PARAMETERS)})",
            )
        given = self.exactly_one(fields, VALUE_KEYS, item)
        expected = METHOD_PARAMETERS[param_name]
        if given != expected:
            raise ExperimentError(_join(item, given), f"{param_name} takes {expected}, not {given}")
        return param_name, expected, fields[expected]

    def method_value(self, param_name: str, value_key: str, value: Any, item: str) -> Any:
        where = _join(item, value_key)
        if value_key == "string_value":
            if not isinstance(value, str) or not value.strip():
                raise ExperimentError(where, f"expected non-empty text, got {_kind(value)}")
            value = value.strip()
            if param_name == "maximize_or_minimize" and value not in DIRECTIONS:
                raise ExperimentError(where, f"expected maximize or minimize, got {value!r}")
            return value
        minimum = 1 if param_name == "num_optimizer_steps" else 0
        return self.whole(value, where, minimum)

    # -- hyperparameters ------------------------------------------------------------------

    def hyper_parameters(self, hpo: dict, path: str, method: str) -> tuple[HyperParameter, ...]:
        entries = hpo.get("hyper_parameters")
        if entries is None:
            raise ExperimentError(path, "required")
        if not isinstance(entries, list) or not entries:
            raise ExperimentError(
                path, f"expected a non-empty list of hyperparameters, got {_kind(entries)}"
            )
        if len(entries) > MAX_HYPER_PARAMETERS:
            raise ExperimentError(
                path, f"at most {MAX_HYPER_PARAMETERS} hyperparameters, got {len(entries)}"
            )
        seen: dict[str, int] = {}
        out = []
        for index, entry in enumerate(entries):
            item = f"{path}[{index}]"
            hp = self.hyper_parameter(entry, item)
            if hp.name in seen:
                raise ExperimentError(
                    _join(item, "name"),
                    f"{hp.name!r} is already the name of hyper_parameters[{seen[hp.name]}]",
                )
            seen[hp.name] = index
            if method == "grid" and not hp.finite:
                raise ExperimentError(
                    _join(item, "double_range"),
                    "a grid needs a step or a power here (a double range has no end of values)",
                )
            out.append(hp)
        return tuple(out)

    def hyper_parameter(self, entry: Any, item: str) -> HyperParameter:
        kinds = RANGE_KINDS + VALUES_KINDS
        fields = self.mapping(entry, item, ("name", *kinds))
        name = self.text(fields, "name", item)
        if not name.isidentifier() or keyword.iskeyword(name) or not name.isascii():
            raise ExperimentError(
                _join(item, "name"),
                f"{name!r} is not usable as a name: letters, digits and _ only, not starting "
                "with a digit, not a Python keyword (it becomes ${name} in the command)",
            )
        if len(name) > MAX_NAME_LENGTH:
            raise ExperimentError(_join(item, "name"), f"longer than {MAX_NAME_LENGTH} characters")
        kind = self.exactly_one(fields, kinds, item)
        where = _join(item, kind)
        if kind in RANGE_KINDS:
            return self.range(name, kind, fields[kind], where)
        return HyperParameter(name, kind, choices=self.choices(kind, fields[kind], where))

    def range(self, name: str, kind: str, value: Any, where: str) -> HyperParameter:
        """{min_value, max_value, step?, power?}: a step range or a log-scaled one."""
        fields = self.mapping(value, where, ("min_value", "max_value", "step", "power"))
        whole = kind == "int_range"
        read = self.bounded_int if whole else self.finite_number
        for key in ("min_value", "max_value"):
            if fields.get(key) is None:
                raise ExperimentError(_join(where, key), "required")
        low = read(fields["min_value"], _join(where, "min_value"))
        high = read(fields["max_value"], _join(where, "max_value"))
        if low > high:
            raise ExperimentError(
                where, f"empty range: min_value {low} is more than max_value {high}"
            )
        step = power = None
        if fields.get("step") is not None and fields.get("power") is not None:
            raise ExperimentError(where, "give step or power, not both")
        if fields.get("step") is not None:
            step = read(fields["step"], _join(where, "step"))
            if step <= 0:
                raise ExperimentError(_join(where, "step"), f"must be more than 0, got {step}")
        if fields.get("power") is not None:
            at = _join(where, "power")
            power = self.bounded_int(fields["power"], at) if whole else None
            if power is None:
                power = self.finite_number(fields["power"], at)
            if power <= 1:
                raise ExperimentError(at, f"must be more than 1, got {power}")
            if low <= 0:
                raise ExperimentError(
                    _join(where, "min_value"),
                    f"a power (log-scaled) range must start above 0, got {low}",
                )
        if not whole:
            low, high = float(low), float(high)
            step = None if step is None else float(step)
        return HyperParameter(
            name, kind, low=low, high=high, step=step, log=power is not None, power=power
        )

    def choices(self, kind: str, value: Any, where: str) -> tuple[int | float | str, ...]:
        """int_values / double_values / string_values: a non-empty list, no value twice."""
        if not isinstance(value, list) or not value:
            raise ExperimentError(where, f"expected a non-empty list, got {_kind(value)}")
        if len(value) > MAX_CHOICES:
            raise ExperimentError(where, f"at most {MAX_CHOICES} values, got {len(value)}")
        out: list[int | float | str] = []
        for index, item in enumerate(value):
            at = f"{where}[{index}]"
            if kind == "int_values":
                choice: int | float | str = self.bounded_int(item, at)
            elif kind == "double_values":
                choice = float(self.finite_number(item, at))
            else:
                if not isinstance(item, str):
                    raise ExperimentError(
                        at,
                        f'expected text, got {_kind(item)} (quote it, e.g. "{item}")',
                    )
                choice = item
            if choice in out:
                raise ExperimentError(at, f"{choice!r} is already in the list")
            out.append(choice)
        return tuple(out)

    # -- limits and options ---------------------------------------------------------------

    def target(self, hpo: dict, path: str) -> float | None:
        if hpo.get("target") is None:
            return None
        return float(self.finite_number(hpo["target"], _join(path, "target")))

    def early_stopping(self, hpo: dict, path: str) -> EarlyStopping | None:
        where = _join(path, "early_stopping")
        value = hpo.get("early_stopping")
        if value is None or value is False:
            return None
        if not isinstance(value, dict):
            raise ExperimentError(
                where, f"expected a mapping like {{method: median}} or false, got {_kind(value)}"
            )
        fields = self.mapping(value, where, ("method", "startup_trials", "warmup_steps"))
        method = self.text(fields, "method", where)
        if method not in EARLY_STOPPING_METHODS:
            raise ExperimentError(
                _join(where, "method"),
                f"unknown method {method!r} (known: {', '.join(EARLY_STOPPING_METHODS)})",
            )
        return EarlyStopping(
            method=method,
            startup_trials=self.integer(fields, "startup_trials", where, 0, default=3),
            warmup_steps=self.integer(fields, "warmup_steps", where, 0, default=1),
        )

    # -- values ---------------------------------------------------------------------------

    def exactly_one(self, fields: dict, choices: tuple[str, ...], path: str) -> str:
        """The one of `choices` that `fields` holds; an error when none or several."""
        given = [k for k in choices if k in fields]
        if len(given) != 1:
            raise ExperimentError(
                path,
                f"give exactly one of {', '.join(choices)}, got "
                + (", ".join(given) if given else "none"),
            )
        return given[0]

    def integer(
        self,
        parent: dict,
        key: str,
        path: str,
        minimum: int,
        default: int | None,
        maximum: int = MAX_INT,
    ) -> int | None:
        if parent.get(key) is None:
            return default
        return self.whole(parent[key], _join(path, key), minimum, maximum)

    def whole(self, value: Any, where: str, minimum: int, maximum: int = MAX_INT) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ExperimentError(where, f"expected a whole number, got {_kind(value)}")
        if not minimum <= value <= maximum:
            raise ExperimentError(where, f"must be from {minimum} to {maximum}, got {value}")
        return value

    def bounded_int(self, value: Any, where: str) -> int:
        return self.whole(value, where, -MAX_INT, MAX_INT)

    def finite_number(self, value: Any, where: str) -> int | float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ExperimentError(where, f"expected a number, got {_kind(value)}")
        if isinstance(value, int):
            return self.bounded_int(value, where)
        if not math.isfinite(value):
            raise ExperimentError(where, f"must be a finite number, got {value}")
        return value


def _decimal(number: int | float) -> Decimal:
    # repr: the shortest text that reads back as this float, i.e. what the user wrote.
    return Decimal(repr(number)) if isinstance(number, float) else Decimal(number)
