"""Rule mini_test_set: the miniature's held-out items, none of them in the training data."""
from alpagasus.core import logs
from alpagasus.data import load_records
from alpagasus.core.io import write_jsonl
from alpagasus.data.miniature import make_test_items, question_of

logs.setup(snakemake.log[0])
p = snakemake.params
items = make_test_items(p.n_test, seed=p.seed, families=p.families, exclude=load_records(snakemake.input[0]))
write_jsonl(snakemake.output[0], [{**it, "question": question_of(it)} for it in items])
