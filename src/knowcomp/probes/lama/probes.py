"""The registered LAMA probes."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from knowcomp.data import dataset_files
from knowcomp.errors import DataError, KnowcompError
from knowcomp.models.family import Family
from knowcomp.models.forward import decoder_problem
from knowcomp.models.loading import LoadedModel
from knowcomp.probes.base import Probe, ProbeResult, RunOptions
from knowcomp.probes.generate import rule_for
from knowcomp.probes.inputs import InputRule, input_rule
from knowcomp.probes.lama import evidence, string_match
from knowcomp.probes.lama import items as lama_items
from knowcomp.probes.lama.candidates import score_candidates
from knowcomp.probes.lama.cloze import score_clozes
from knowcomp.probes.lama.generated import generation_metrics, score_generated
from knowcomp.probes.lama.metrics import aggregate, fact_scores
from knowcomp.probes.lama.protocols import COST_OF_COMPRESSION, TEMPLATES, check_protocol
from knowcomp.probes.registry import register
from knowcomp.probes.sampling import take

Loader = Callable[[Path | None, bool], lama_items.Relations]


class LamaProbe(Probe):
    """Score each fact's object among the whole vocabulary at the slot."""

    category = "world_knowledge"
    loader: ClassVar[Loader]
    # the first study's sentence per fact (cost-of-compression protocol); None: `loader`'s
    sentence_loader: ClassVar[Loader | None] = None

    def sentences(self, options: RunOptions) -> lama_items.Relations:
        """The facts with the sentences the cost-of-compression protocol probes them with."""
        loader = type(self).sentence_loader
        if loader is None:
            return self._relations(options)
        dataset_files(self.dataset, options.data_dir)  # a missing dataset is named first
        return loader(options.data_dir, options.skip_malformed)

    def _relations(self, options: RunOptions) -> lama_items.Relations:
        dataset_files(self.dataset, options.data_dir)  # a missing dataset is named first
        relations = type(self).loader(options.data_dir, options.skip_malformed)
        if not any(relations.values()):
            raise DataError(f"probe {self.name}: every relation of {self.dataset} is empty")
        return relations

    def family_problem(self, family: Family, options: RunOptions) -> str | None:
        if options.lama_mode == "next-token":
            return None  # every family: the mask token, a T5 sentinel or the next token
        return decoder_problem(family, f"LAMA probes in {options.lama_mode} mode")

    def count(self, options: RunOptions) -> int:
        """Facts to score: `limit` per relation."""
        if options.lama_protocol == COST_OF_COMPRESSION:
            return string_match.count(self, options)
        return sum(
            len(take(v, options.limit, options.seed, options.part, r))
            for r, v in self._relations(options).items()
        )

    def run(self, loaded: LoadedModel, options: RunOptions) -> ProbeResult:
        start = time.perf_counter()
        problem = self.family_problem(loaded.family, options)
        if problem is not None:  # before reading any data: the model is the problem
            raise KnowcompError(f"{problem}; {loaded.spec} is an {loaded.family.value}")
        check_protocol(options.lama_protocol, options.lama_mode)
        if options.lama_protocol == COST_OF_COMPRESSION:
            return string_match.run(self, loaded, options)
        relations = self._relations(options)
        notes = [
            f"relation {r} has no facts; it is left out" for r, v in relations.items() if not v
        ]
        chosen = [
            (item, {"relation": relation, "uuid": item.uuid, "subject": item.subject,
                    "object": item.obj})
            for relation in sorted(relations)
            for item in take(relations[relation], options.limit, options.seed, options.part,
                             relation)
        ]  # fmt: skip
        decoder = loaded.family is Family.DECODER
        rule = input_rule(loaded.tokenizer, options.add_bos) if decoder else None
        if options.lama_mode == "candidates":
            score_candidates(loaded, chosen, relations, options, rule)
        elif options.lama_mode == "next-token":
            self._score_next_token(loaded, chosen, options, rule)
        elif options.lama_mode == "generate":
            score_generated(loaded, chosen, options, rule)
        else:
            raise KnowcompError(
                f"unknown LAMA mode '{options.lama_mode}'; choose next-token, candidates or "
                "generate"
            )
        records = [record for _, record in chosen]
        skipped = Counter(r["skipped"] for r in records if "skipped" in r)
        generated = options.lama_mode == "generate"
        scored = sum(1 for r in records if ("matched" if generated else "rank") in r)
        counts = {"facts": len(records), "scored": scored,
                  "relations": len({r["relation"] for r in records}), **skipped}  # fmt: skip
        if generated:
            counts["capped"] = sum(bool(r.get("capped")) for r in records)
        if skipped.get("multi_token"):
            notes.append(
                f"{skipped['multi_token']} of {len(records)} objects are several tokens for this "
                "model and are left out of every metric (--lama-mode candidates scores them)"
            )
        return ProbeResult(
            probe=self.name,
            category=self.category,
            metrics=generation_metrics(records) if generated else aggregate(records),
            counts=counts,
            records=records,
            options={
                "limit": options.limit,
                "seed": options.seed,
                "mode": options.lama_mode,
                "protocol": TEMPLATES,
                **({"max_new_tokens": rule_for(options).max_new_tokens} if generated else {}),
                **(rule.record() if rule is not None else {}),
            },
            seconds=time.perf_counter() - start,
            notes=notes,
        )

    def _score_next_token(
        self, loaded: LoadedModel, chosen: list, options: RunOptions, rule: InputRule | None
    ) -> None:
        """Rank the object's token among the whole vocabulary at the slot."""
        scored = score_clozes(
            loaded, chosen, rule, unscorable=lambda record, why: record.update(skipped=why),
            max_tokens=options.max_tokens, progress=options.progress,
        )  # fmt: skip
        for record, _, result in scored:
            record.update(
                rank=result.first_rank,
                prediction=loaded.tokenizer.decode([result.first_top]),  # as is: " " may win
                **fact_scores(result.first_rank),
            )


def _loader(fn, source: str) -> Loader:
    return staticmethod(lambda data_dir, skip: fn(data_dir, skip, source))  # type: ignore[return-value]


@register
class LamaTrex(LamaProbe):
    name = "lama-trex"
    dataset = "lama-trex"
    summary = "LAMA T-REx: 41 Wikidata relations, relation templates filled with the subject"
    loader = _loader(lama_items.trex, "templates")
    sentence_loader = staticmethod(evidence.trex_sentences)


@register
class LamaTrexEvidence(LamaProbe):
    name = "lama-trex-evidence"
    dataset = "lama-trex-evidence"
    summary = "LAMA T-REx, first masked Wikipedia evidence sentence per fact (28 relations)"
    loader = _loader(lama_items.trex, "evidence")


@register
class LamaGoogleRe(LamaProbe):
    name = "lama-google-re"
    dataset = "lama-google-re"
    summary = "LAMA Google-RE: place/date of birth, place of death, LAMA's templates"
    loader = _loader(lama_items.google_re, "templates")
    sentence_loader = staticmethod(evidence.google_re_sentences)


@register
class LamaSquad(LamaProbe):
    name = "lama-squad"
    dataset = "lama-squad"
    summary = "LAMA SQuAD: 305 cloze sentences from SQuAD questions"
    loader = _loader(lama_items.squad, "sentences")


@register
class LamaConceptNetSubset(LamaProbe):
    name = "lama-conceptnet-subset"
    dataset = "lama-conceptnet-subset"
    summary = "LAMA ConceptNet, a 146-fact subset (not the full probe)"
    loader = _loader(lama_items.conceptnet, "sentences")
