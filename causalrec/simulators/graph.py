"""The simulator's causal graph as data, renderable to Mermaid."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CausalGraph", "Edge", "Node"]


@dataclass(frozen=True)
class Node:
    """A variable of the structural causal model.

    Attributes:
        name: Identifier, e.g. ``"user_latent"``.
        label: Human-readable label with notation, e.g. ``"θ_u latent preference"``.
        observed: Whether the variable appears in the logs.
    """

    name: str
    label: str
    observed: bool


@dataclass(frozen=True)
class Edge:
    """A direct causal effect ``source → target``."""

    source: str
    target: str


@dataclass(frozen=True)
class CausalGraph:
    """Nodes and directed edges of the simulator's structural causal model."""

    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]

    def has_edge(self, source: str, target: str) -> bool:
        """Whether ``source → target`` is an edge."""
        return Edge(source, target) in self.edges

    def parents(self, name: str) -> list[str]:
        """Names of the direct causes of ``name``."""
        return [edge.source for edge in self.edges if edge.target == name]

    def to_mermaid(self) -> str:
        """Render as a Mermaid ``flowchart``; latent variables are drawn with dashed borders."""
        lines = ["flowchart LR"]
        for node in self.nodes:
            shape = f'["{node.label}"]' if node.observed else f'(["{node.label}"])'
            lines.append(f"    {node.name}{shape}")
        lines.extend(f"    {edge.source} --> {edge.target}" for edge in self.edges)
        latent = [node.name for node in self.nodes if not node.observed]
        if latent:
            lines.append("    classDef latent stroke-dasharray: 5 5")
            lines.append(f"    class {','.join(latent)} latent")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-ready form: ``{"nodes": [...], "edges": [[source, target], ...]}``."""
        return {
            "nodes": [vars(node) for node in self.nodes],
            "edges": [[edge.source, edge.target] for edge in self.edges],
        }
