"""The host side: the Device protocol, the golden N-bank device, the driver that issues PIM
commands, and the command-trace recorder. Imports the contract and the golden model only."""
