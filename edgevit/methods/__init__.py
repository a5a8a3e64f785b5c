"""Methods: torch or graph transforms that make a model smaller or faster — ``distill/`` (TinyViT-style sparse
teacher distillation), ``early_exit/`` (LGViT exits),
``shiftadd/`` (ShiftAddViT: MatAdd attention, shift linears, MoE), ``quantize/`` (INT8 PTQ).

A method is one folder here plus its recipe stage in :mod:`edgevit.stages`; its command-line sub-command lives on
the CLI floor (``edgevit/cli/<method>.py``), which imports the method, never the other way round. Importing this
package imports no method.
"""
