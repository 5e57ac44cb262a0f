"""One module per distillation method; the file name is the method's name
(`distill.terms.<name>`)."""
