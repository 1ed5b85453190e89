"""Pipeline stages, one file each: finetune, export, compile, verify."""
