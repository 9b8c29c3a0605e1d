"""Scenario files (TOML), validated with pydantic: unknown keys, wrong types and values out of
range are refused with one line per problem naming the key, the value and what is allowed."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rtvm.kernel.host import GENERATIONS
from rtvm.methods import METHODS


class _Strict(BaseModel):
    # strict: TOML has types of its own, so a string where a number belongs ("5") or a float
    # where an integer does (1.5) is a mistake to name, not a value to coerce
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Host(_Strict):
    cpus: int = Field(2, ge=1, le=64)
    generation: str | None = None
    hz: Literal[100, 250, 300, 1000] = 1000
    #: NO_HZ_FULL CPUs (the nohz_full= boot option); unset: every CPU but CPU 0, the testbed's
    #: NO_HZ_FULL (CONFIG_NO_HZ_FULL_ALL); [] for a NO_HZ_IDLE host
    nohz_full: list[int] | None = None
    halt_poll_ns: int | None = Field(None, ge=0, le=10_000_000)
    event_idx: bool = True

    @field_validator("generation")
    @classmethod
    def _known_generation(cls, v: str | None) -> str | None:
        if v is not None and v not in GENERATIONS:
            raise ValueError(f"unknown kernel generation; allowed: {', '.join(GENERATIONS)}")
        return v

    @model_validator(mode="after")
    def _nohz_full_cpus(self) -> Host:
        bad = [c for c in self.nohz_full or [] if not 1 <= c < self.cpus]
        if bad:
            raise ValueError(
                f"nohz_full CPUs {bad}: allowed 1..{self.cpus - 1} (CPU 0 keeps the tick)"
            )
        return self


#: the longest gap between RT requests a scenario may ask for: the longest run (3600 s)
MAX_INTERARRIVAL_US = 3_600_000_000


class Rr(_Strict):
    interarrival_min_us: int = Field(1000, ge=1, le=MAX_INTERARRIVAL_US)
    interarrival_max_us: int = Field(10000, ge=1, le=MAX_INTERARRIVAL_US)
    request_bytes: int = Field(64, ge=1, le=1472)
    response_bytes: int = Field(64, ge=1, le=1472)

    @model_validator(mode="after")
    def _ordered(self) -> Rr:
        if self.interarrival_max_us < self.interarrival_min_us:
            raise ValueError("interarrival_max_us must be >= interarrival_min_us")
        return self


class Heavy(_Strict):
    receivers: int = Field(2, ge=0, le=2)


class Workload(_Strict):
    rr: Rr = Rr()
    heavy: Heavy = Heavy()


#: ethtool -C rx-usecs as ixgbe_set_coalesce() takes it: at most IXGBE_MAX_EITR >> 2 us; 1
#: selects the adaptive ITR (the driver's default), 0 turns moderation off
RX_USECS_MAX = 0xFF8 >> 2


class Irq(_Strict):
    """Where each NIC's interrupt goes (its MSI-X vector's CPU; the IRQ thread follows it),
    and its interrupt moderation (``ethtool -C ethN rx-usecs``); and which of the RT VM's
    vCPUs takes the RT guest's device interrupt. Unset: the method's own routing, ixgbe's
    adaptive moderation, and the guest's default (its housekeeping vCPU)."""

    rt_nic_cpu: int | None = Field(None, ge=0)
    heavy_nic_cpus: list[int] | None = None
    # strict: a TOML true / false would otherwise read as 1 (adaptive) / 0 (off)
    rt_nic_rx_usecs: int | None = Field(None, ge=0, le=RX_USECS_MAX, strict=True)
    heavy_nic_rx_usecs: int | None = Field(None, ge=0, le=RX_USECS_MAX, strict=True)
    #: which RT VM vCPU takes its virtio-net (or VMRPC) interrupt inside the guest:
    #: "housekeeping", where a 4.1 guest sends it by default, or "rt", the server's vCPU (the
    #: guest's /proc/irq/N/smp_affinity); testbed.GUEST_IRQ_VCPUS says why
    rt_guest_irq_vcpu: Literal["housekeeping", "rt"] = "housekeeping"

    @field_validator("heavy_nic_cpus")
    @classmethod
    def _non_negative(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and any(c < 0 for c in v):
            raise ValueError("CPU numbers must be >= 0")
        return v


class Profile(_Strict):
    """The cost profile: ``path`` (unset: the embedded one; a relative path is read from the
    scenario file's directory) and ``overrides``, costs to replace by name."""

    path: str | None = None
    overrides: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)


class Scenario(_Strict):
    name: str = "scenario"
    method: str
    duration_s: float = Field(30.0, ge=0.01, le=3600)
    seed: int = Field(1, ge=0)
    warmup_s: float = Field(0.1, ge=0)
    #: idle compression: simulate 1/N of each RT gap beyond its floor (the workload's shortest
    #: gap, at least 1 ms; workloads.idle_compression); runs of 10 s or more
    compress_idle: int = Field(1, ge=1, le=1000)
    host: Host = Host()
    workload: Workload = Workload()
    irq: Irq = Irq()
    profile: Profile = Profile()

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        if v not in METHODS:
            raise ValueError(f"unknown method; allowed: {', '.join(METHODS)}")
        return v

    @model_validator(mode="after")
    def _irq_cpus_exist(self) -> Scenario:
        ncpus, irq = self.host.cpus, self.irq
        cpus = [c for c in [irq.rt_nic_cpu, *(irq.heavy_nic_cpus or [])] if c is not None]
        if any(c >= ncpus for c in cpus):
            allowed = f"0..{ncpus - 1}"
            raise ValueError(f"irq: a NIC's CPU is outside the host's CPUs; allowed: {allowed}")
        n = self.workload.heavy.receivers
        if irq.heavy_nic_cpus is not None and len(irq.heavy_nic_cpus) != n:
            raise ValueError(f"irq.heavy_nic_cpus: one CPU per heavy receiver's NIC ({n})")
        return self

    @model_validator(mode="after")
    def _method_fits_the_host(self) -> Scenario:
        """The method's own wiring names CPUs too (its NICs' interrupts, unless [irq] moves
        them; its threads' affinities): all must exist on this host."""
        m, irq, ncpus = METHODS[self.method], self.irq, self.host.cpus
        named = [
            irq.rt_nic_cpu if irq.rt_nic_cpu is not None else m.rt_nic_cpu,
            *(irq.heavy_nic_cpus or m.heavy_nic_cpus[: self.workload.heavy.receivers]),
        ]
        threads = (m.rt_irq, m.heavy_irq, m.rt_vhost, m.heavy_vhost, m.rt_vcpu)
        for sched in (*threads, m.housekeeping_vcpu, m.heavy_vcpu):
            named.extend(sched.cpus or ())
        if max(named) >= ncpus:
            raise ValueError(
                f"host.cpus = {ncpus}: method {self.method} uses CPU {max(named)} (its NICs' "
                f"interrupts or its threads' affinities); allowed: host.cpus >= {max(named) + 1},"
                " or [irq] moving the NICs' interrupts onto the host's CPUs"
            )
        return self


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    m: Any = model
    for part in loc[:-1]:
        field = m.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not isinstance(field.annotation, type):
            return ""
        m = field.annotation
    return ", ".join(m.model_fields) if hasattr(m, "model_fields") else ""


def format_errors(origin: str, err: ValidationError) -> list[str]:
    """One line per problem: where, what value, what is allowed."""
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(Scenario, loc)
            lines.append(f"{origin}: unknown key {key}; allowed here: {allowed}")
        elif e["type"] == "missing":
            lines.append(f"{origin}: missing key {key}")
        elif not loc:  # a check across keys: its message names them
            lines.append(f"{origin}: {e['msg'].removeprefix('Value error, ')}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            val = e.get("input")
            shown = "" if isinstance(val, dict) else f" = {val!r}"
            lines.append(f"{origin}: {key}{shown}: {msg}")
    return lines


def load_scenario(path: str | Path) -> Scenario:
    """Parse and validate; raises ValueError with one line per problem."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text("utf-8"))
    except FileNotFoundError as e:
        raise ValueError(f"{p}: no such file") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except OSError as e:
        raise ValueError(f"{p}: cannot read it ({e.strerror or e})") from e
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{p}: not valid TOML: {e}") from e
    try:
        return Scenario.model_validate(data)
    except ValidationError as e:
        raise ValueError("\n".join(format_errors(str(p), e))) from e


def profile_path(sc: Scenario, scenario_file: str | Path) -> str | None:
    """Where the scenario's profile is read from: a relative ``profile.path`` beside the
    scenario file, whichever directory rtvm runs in (the scenario keeps the path as written,
    so that its results can be pasted back into a scenario file)."""
    if sc.profile.path is None or Path(sc.profile.path).is_absolute():
        return sc.profile.path
    return str(Path(scenario_file).parent / sc.profile.path)
