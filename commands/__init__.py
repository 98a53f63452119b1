"""Commands: the console programs (demo, compare, bench) built on every layer below."""
