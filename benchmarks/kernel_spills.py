"""Stack traffic in the kernels' register-tiled product loops, per variant.

    python benchmarks/kernel_spills.py rnnscan/kernels/_lstm_cpu_*.so rnnscan/kernels/_gru_cpu_*.so

For every instantiation of `product_tile<R, V, accumulate>` (R rows x V vectors),
the innermost loop's instruction count, its multiply-adds and its references to
the stack (`%rsp`/`%rbp`): a tile sized to its register file has none.
Needs `objdump` (binutils).
"""

import re
import subprocess
import sys


def loops(library: str):
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-C", library],
                         capture_output=True, text=True, check=True).stdout
    for function in re.split(r"\n(?=[0-9a-f]+ <)", out):
        tile = re.search(r"product_tile<(\d+), (\d+), (true|false)>", function.split("\n", 1)[0])
        if not tile:
            continue
        lines = [l for l in function.split("\n")[1:] if re.match(r"\s+[0-9a-f]+:", l)]
        address = [int(l.split(":")[0], 16) for l in lines]
        innermost = None
        for i, line in enumerate(lines):  # the shortest backward jump around multiply-adds
            jump = re.search(r"\sj\w+\s+([0-9a-f]+) <", line)
            if not jump or int(jump.group(1), 16) not in address[:i]:
                continue
            start = address.index(int(jump.group(1), 16))
            body = lines[start:i + 1]
            if any(re.search(r"fmadd|mulps", b) for b in body) and (
                    innermost is None or len(body) < len(innermost)):
                innermost = body
        stack = sum(bool(re.search(r"\(%rsp|\(%rbp", b)) for b in innermost)
        fma = sum(bool(re.search(r"fmadd|mulps", b)) for b in innermost)
        yield tile.groups(), len(innermost), fma, stack


if __name__ == "__main__":
    for library in sys.argv[1:]:
        print(f"== {library}")
        for (rows, vectors, accumulate), size, fma, stack in loops(library):
            print(f"R={rows} V={vectors} accumulate={accumulate}: loop of {size} instructions, "
                  f"{fma} multiply(-add)s, {stack} stack references")
