"""Making a population: a toy NLI corpus with a lexical-overlap trap (toynli), a small pretrained start (pretrain),
finetuned copies (finetune, one Ray Tune trial per seed: ray_finetune). lmc_ray/demo.py runs the whole pipeline on them."""
