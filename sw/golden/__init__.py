"""The golden model: PQ training and encoding, the bit-exact integer model of every unit, the
float references and synthetic data. Plain NumPy (and numba kernels); no simulator imports."""
