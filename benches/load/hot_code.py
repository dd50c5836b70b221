"""Hot code of a callgrind dump: the 64-byte lines whose instructions ran at least THRESHOLD
times per transaction, in KiB, and the functions they belong to.

The dump must come from `callgrind --dump-instr=yes` (`INSTR_CACHE=1 instructions.sh` makes
one). The figure says how much of the 32 KiB instruction cache one transaction needs: the
relay's hot path, laid out loosely, did not fit (docs/benchmarks.md, twelfth session).

    python3 benches/load/hot_code.py <callgrind.out> <transactions> [threshold=0.5] [top=12]
"""
import collections
import re
import sys


def read_costs(path):
    """Instruction address -> (self instructions, function name)."""
    names = {}

    def name(kind, rest):
        # Compressed names: "(7) full name" defines id 7, "(7)" refers to it.
        m = re.match(r"\((\d+)\)(?: (.*))?", rest)
        if not m:
            return rest
        key = (kind, m.group(1))
        if m.group(2) is not None:
            names[key] = m.group(2)
        return names.get(key, m.group(1))

    positions, fn, after_calls, last = 1, None, False, [0, 0]
    cost = collections.Counter()
    owner = {}
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            head = line.split("=", 1)[0]
            if line.startswith("positions:"):
                positions = len(line.split()) - 1
            elif head == "fn":
                fn = name("fn", line[3:])
            elif head == "cfn":
                name("fn", line[4:])
            elif head == "calls":
                after_calls = True  # the next cost line is the call's inclusive cost
            elif line and (line[0].isdigit() or line[0] in "+-*"):
                fields = line.split()
                for i in range(positions):
                    t = fields[i]
                    if t == "*":
                        continue
                    last[i] = last[i] + int(t) if t[0] in "+-" else int(t, 0)
                if after_calls:
                    after_calls = False
                    continue
                address = last[0]
                cost[address] += int(fields[positions]) if len(fields) > positions else 0
                owner[address] = fn
    return cost, owner


def main():
    path, tx = sys.argv[1], int(sys.argv[2])
    threshold = float(sys.argv[3]) if len(sys.argv) > 3 else 0.5
    top = int(sys.argv[4]) if len(sys.argv) > 4 else 12
    cost, owner = read_costs(path)
    hot = [a for a, n in cost.items() if n >= threshold * tx]
    lines = collections.defaultdict(set)
    for a in hot:
        lines[a // 64].add(owner[a])
    share = collections.Counter()
    for fns in lines.values():
        for fn in fns:
            share[fn] += 64 / len(fns)
    print(f"hot code (run >= {threshold} times per transaction): {len(hot)} instructions "
          f"on {len(lines)} lines, {len(lines) * 64 / 1024:.1f} KiB")
    for fn, b in share.most_common(top):
        print(f"  {b / 1024:6.2f} KiB  {(fn or '?')[:120]}")


if __name__ == "__main__":
    main()
