"""The built-in task and finetuning: a toy NLI corpus with a lexical-overlap trap (toynli), a small pretrained start
(pretrain), finetuned copies (finetune, on Ray Tune: ray_finetune), and the whole pipeline on them (demo)."""
