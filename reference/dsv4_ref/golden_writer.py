"""Writes golden cases as .npy files: OUT/<family>/<case>/<name>.npy plus OUT/<family>/cases.txt."""
import pathlib
import shutil

import numpy as np


class GoldenWriter:
    def __init__(self, out: pathlib.Path, family: str):
        self.root = out / family
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)
        self.cases = []

    def case(self, name: str, **arrays):
        """Write one case. Arrays keep their dtype; Python ints/floats become 1-element arrays."""
        if name in self.cases:
            raise ValueError(f"duplicate golden case {name}")
        d = self.root / name
        d.mkdir()
        for key, value in arrays.items():
            arr = np.asarray(value)
            if arr.ndim == 0:
                arr = arr.reshape(1)
            np.save(d / f"{key}.npy", np.ascontiguousarray(arr), allow_pickle=False)
        self.cases.append(name)

    def finish(self):
        (self.root / "cases.txt").write_text("".join(c + "\n" for c in self.cases))
