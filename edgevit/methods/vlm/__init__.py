"""Small vision-language models (specs/methods.md §4–§5): dual image–text encoders, the CLIP loss, DCD contrastive
distillation and its baselines (contrastive-only, TinyCLIP affinity mimicking), a stored-embedding teacher cache,
retrieval and zero-shot evaluation, and folding an image tower + class-text embeddings into a classifier.

- :mod:`.towers` — image/text towers, :class:`DualEncoder`, save/load;
- :mod:`.losses` — CLIP, DCD, affinity losses;
- :mod:`.evaluate` — R@1/5/10 both ways, zero-shot top-1;
- :mod:`.train` — LiT-style teacher training and student distillation;
- :mod:`.cache` — dense teacher-embedding cache (fp16 + augmentation seed);
- :mod:`.fold` — image tower + class-text head → a plain classifier;
- :mod:`.deploy` — each tower exported alone (ONNX, OpenVINO, TVM) with parity by cosine similarity, the class-text
  embeddings stored with the image tower, each tower run and timed on its runtime.
The command line is :mod:`edgevit.cli.vlm`. Importing this package imports neither torch nor transformers.
"""
