"""Small helpers over an ``onnx.GraphProto`` shared by the ONNX Runtime graph passes."""
from __future__ import annotations

from typing import Any

import numpy as np


def constants(graph) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    out = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            out[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return out


def constants_through_identity(graph) -> dict[str, np.ndarray]:
    """Initializers and Constant outputs, and Identity nodes of those (the exporter aliases shared BN
    parameters that way)."""
    out = constants(graph)
    for n in graph.node:
        if n.op_type == "Identity" and n.input[0] in out:
            out[n.output[0]] = out[n.input[0]]
    return out


def consumers(graph) -> dict[str, list]:
    out: dict[str, list] = {}
    for n in graph.node:
        for name in n.input:
            out.setdefault(name, []).append(n)
    return out


def producers(graph) -> dict[str, Any]:
    return {o: n for n in graph.node for o in n.output}


def attr(node, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return a.f if a.type == a.FLOAT else a.i
    return default


def prune_dead(graph) -> int:
    """Drop nodes whose outputs nobody reads, and initializers no node reads."""
    outputs = {o.name for o in graph.output}
    removed = 0
    while True:
        read = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if not any(o in read for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
        removed += len(dead)
    read = {i for n in graph.node for i in n.input}
    for init in [i for i in graph.initializer if i.name not in read]:
        graph.initializer.remove(init)
    return removed


def topological_sort(graph) -> None:
    """Reorder nodes so each comes after the producers of its inputs (rerouting can break the order)."""
    produced_by = {o: i for i, n in enumerate(graph.node) for o in n.output}
    nodes, order, state = list(graph.node), [], {}

    def visit(i: int) -> None:
        stack = [(i, False)]
        while stack:
            j, expanded = stack.pop()
            if expanded:
                if state.get(j) != 2:
                    state[j] = 2
                    order.append(nodes[j])
                continue
            if state.get(j):
                continue
            state[j] = 1
            stack.append((j, True))
            stack.extend((produced_by[x], False) for x in nodes[j].input if x in produced_by and not state.get(produced_by[x]))

    for i in range(len(nodes)):
        visit(i)
    del graph.node[:]
    graph.node.extend(order)
