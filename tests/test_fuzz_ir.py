"""Fuzzing of cnnspec.validate: corrupted IR documents (wrong types, missing keys, negative or
enormous sizes, dangling names, nodes out of order, broken JSON) end in SpecErrors with JSON
pointers or a valid Model. A file of its own so that pytest-xdist (`--dist loadfile`) runs it
beside the text fuzzing of tests/test_fuzz.py."""

from __future__ import annotations

import json
import time

import fuzzing
import pytest
from fuzzing import CHUNK_SECONDS, IR_CHUNKS, IR_PER_CHUNK

import cnnspec
from cnnspec import SpecErrors


@pytest.mark.parametrize("chunk", range(IR_CHUNKS))
def test_ir_mutants(chunk):
    start = time.perf_counter()
    ran, failures, slowest = fuzzing.ir_campaign(IR_PER_CHUNK, seed=chunk)
    took = time.perf_counter() - start
    print(
        f"IR chunk {chunk}: {ran} documents in {took:.1f} s ({ran / took:.0f}/s), "
        f"slowest {slowest:.2f} s"
    )
    assert ran == IR_PER_CHUNK
    assert not failures, _show(failures)
    assert took < CHUNK_SECONDS


def test_corrupted_ir_is_refused_with_pointers():
    refused = 0
    for document in fuzzing.ir_inputs(200, seed=99):
        try:
            cnnspec.validate(
                document if isinstance(document, (str, bytes)) else json.dumps(document)
            )
        except SpecErrors as errs:
            refused += 1
            assert all(e.code and e.pointer is not None for e in errs.errors)
    assert refused >= 150


def _show(failures) -> str:
    document, problem = failures[0]
    shown = document if isinstance(document, (str, bytes)) else json.dumps(document)
    return f"{len(failures)} failures; the first:\n{shown[:500]}\n{problem}"
