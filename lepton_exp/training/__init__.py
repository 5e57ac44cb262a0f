"""Training: Lightning modules (classification, distillation), trainer set-up, resume, DDP
launch, and the training work of the stages (pruning + finetuning, quantization)."""
