"""Training: Lightning modules (classification, distillation), trainer set-up, resume, DDP launch, and\nthe training work of the stages (pruning + finetuning, quantization)."""
