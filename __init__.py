"""xnorflow: binarized neural networks to bit-exact streaming FPGA accelerators."""
__version__ = "0.1.0"
