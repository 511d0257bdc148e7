"""Frontends: each turns what one capture recorded into canonical op calls on the shared
lowering (converters/graph.py). torch.py: torch.export, torch.fx and TorchScript graphs."""
