"""Human- and machine-readable summaries of a bundle: layout, blocks, phases, sizes, digital work."""

from __future__ import annotations

from collections import Counter

from admc.bundle.store import Bundle
from admc.passes.loop_budget import describe as describe_convergence
from admc.targets.backends import backend_of_manifest


def summary(bundle: Bundle) -> dict:
    manifest = bundle.manifest
    layout = manifest["layout"]
    phases = manifest["phases"]
    loops = Counter(phase["loop"] for step in phases for phase in step)
    result = {
        "bundle": str(bundle.path),
        "target": manifest["target"].get("name", manifest["target"].get("kind")),
        "source": {key: manifest["source"][key] for key in ("name", "format", "sha256", "state_dimension")},
        "solver": manifest["solver"]["name"],
        "fp_iterations": manifest["solver"].get("fp_iterations"),
        "steps": manifest["solver"]["steps"],
        "phases_per_step": [len(step) for step in phases][:1][0] if phases else 0,
        "phase_loops": dict(sorted(loops.items())),
        "layout": layout["kind"],
        "state_channels": layout["size"],
        "groups": [{key: group[key] for key in ("name", "size", "activation", "held", "role")}
                   for group in layout["groups"]],
        "blocks": [{key: block[key] for key in ("row_group", "column_group", "rows", "columns", "scale_class")}
                   for block in layout["blocks"]],
        "open_loop_iterations": layout["open_iterations"],
        "payload_bytes": sum(len(bundle.read_bytes(name)) for name in manifest["payloads"]),
        "report": manifest.get("report", {}),
        "convergence": manifest.get("convergence", {}),
    }
    if manifest.get("conditions"):
        result["conditions"] = conditions_summary(manifest["conditions"])
    backend = backend_of_manifest(manifest, str(bundle.path))
    if backend is not None and backend.describe is not None:
        data, lines = backend.describe(manifest)
        result.update(data)
        result["target_lines"] = lines
    return result


def describe(bundle: Bundle) -> str:
    data = summary(bundle)
    report = data["report"]
    lines = [
        f"bundle      {data['bundle']}",
        f"target      {data['target']}",
        f"source      {data['source']['name']} ({data['source']['format']}, sha256 "
        f"{data['source']['sha256'][:12]}…), state dimension {data['source']['state_dimension']}",
        f"solver      {data['solver']}" + (f", {data['fp_iterations']} fixed-point iterations"
                                           if data["fp_iterations"] else "")
        + f", {data['steps']} steps, {data['phases_per_step']} phase(s) per step ("
        + ", ".join(f"{count} {loop}" for loop, count in data["phase_loops"].items()) + " phases in all)",
        f"layout      {data['layout']}: {data['state_channels']} state channels in {len(data['groups'])} groups,"
        f" {len(data['blocks'])} non-zero blocks, open loop settles in {data['open_loop_iterations']} iterations",
        f"digital     {report.get('digital_multiply_adds_per_step', 0)} host multiply-adds per step",
        "groups:",
    ]
    for group in data["groups"]:
        flags = ", held in open phases" if group["held"] else ""
        lines.append(f"  {group['name']:<14} {group['size']:>6} channels  {group['activation']:<8} "
                     f"{group['role']}{flags}")
    lines.append("blocks (rows ← columns):")
    for block in data["blocks"]:
        lines.append(f"  {block['row_group']:<14} ← {block['column_group']:<14} {block['rows']:>5} × "
                     f"{block['columns']:<5} scale {block['scale_class']}")
    for note in report.get("notes", []):
        lines.append(f"note: {note}")
    lines += conditions_lines(data.get("conditions"))
    lines += data.get("target_lines", [])
    lines.extend(describe_convergence(data["convergence"]))
    lines.append(f"payloads    {data['payload_bytes']} bytes")
    return "\n".join(lines)


def conditions_summary(section: dict) -> dict:
    return {"inputs": section["inputs"], "distribution": section.get("distribution", {}),
            "interface": section["interface"]["size"], "guidance": section.get("guidance")}


def conditions_lines(data: dict | None) -> list[str]:
    """The digital conditioning interface and guidance, for ``describe``."""
    if not data:
        return []
    size = data["interface"]
    inputs = ", ".join(f"{entry['name']} ({entry['kind']}, [B{''.join(f', {n}' for n in entry['shape'])}]"
                       + (f", {data['distribution'][entry['name']]['kind']}" if entry["name"] in data["distribution"]
                          else ", no declared distribution") + ")" for entry in data["inputs"])
    lines = [f"conditions  {inputs}",
             f"interface   digital conditioning interface: {size['parameters']} parameters, "
             f"{size['multiply_adds_per_sample']} multiply-adds per sample"
             + (f" + {size['multiply_adds_per_sample_per_phase']} per sample per phase (depends on t)"
                if size["depends_on_time"] else " (once per sample, independent of t)")
             + f"; {size['boundary_features']} injected values per sample"]
    guidance = data.get("guidance")
    if guidance:
        cost = guidance.get("module_cost") or {}
        lines.append(f"guidance    W = {guidance['weight']} (null {guidance['null']}): two hidden chains, "
                     f"{cost.get('weights_guided', '?')} weights vs {cost.get('weights_unguided', '?')} unguided"
                     + (f", module lower bound {cost['module_lower_bound_guided']} vs "
                        f"{cost['module_lower_bound_unguided']}" if "module_lower_bound_guided" in cost else "")
                     + (f", {cost['modules_used_guided']} modules used" if "modules_used_guided" in cost else ""))
        lines.append(f"            {guidance['why']}")
    return lines
