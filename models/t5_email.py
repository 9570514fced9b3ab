"""Write an email from its key points with a text-to-text model (default: T5, seed 004's base model).

The question, behind the task `prefix`, is the encoder input; of the `n_gen` emails written per question, the most
confident is the answer (one annotation per prompt) and `model_output.generations` holds them all. Fine-tune it on
your own emails with `train_model`: (prefix + question) is the source, the reference email the target.
"""
from __future__ import annotations

from transformers import AutoModelForSeq2SeqLM

from adapters.core.errors import ConfigurationError
from adapters.core.generation import (MIN_TEMPERATURE, SAMPLING_SETTINGS, beams_setting, samples,
                                      token_budget_setting)
from adapters.core.generative_adapter import GenerativeAdapter
from adapters.core.hugging_adapter import Row, Turn
from adapters.core.prompt_items import Question
from adapters.core.settings import MAX_GENERATIONS, Setting, unicode_problem
from adapters.runtimes import GENERATE, runtime_settings
from adapters.training.settings import TRAINING_SETTINGS, source_length_setting, target_length_setting


class HuggingAdapter(GenerativeAdapter):
    model_class = AutoModelForSeq2SeqLM
    family = "encoder-decoder text-to-text models (…ForConditionalGeneration: T5, BART, Pegasus, ...)"
    budget_key = "token_count"
    settings = (
        Setting("prefix", (str,), "task prefix put before each question", check=unicode_problem),
        token_budget_setting("token_count", "longest email, in tokens"),
        Setting("n_gen", (int,), "emails generated per question; the one answer (annotation) is the most confident, "
                "and its model_output.generations holds them all", minimum=1, maximum=MAX_GENERATIONS),
        beams_setting(),
        *SAMPLING_SETTINGS,
        *runtime_settings(GENERATE),
        *TRAINING_SETTINGS,
        source_length_setting(),
        target_length_setting(),
    )

    @property
    def generations_per_question(self) -> int:
        return self.configuration["n_gen"]

    @classmethod
    def check_configuration(cls, configuration: dict) -> None:
        sampling = samples(configuration)
        if not sampling and configuration["n_gen"] > configuration["num_beams"]:
            raise ConfigurationError("n_gen > 1 without sampling needs num_beams >= n_gen (or set do_sample true "
                                     f"and temperature >= {MIN_TEMPERATURE:g})")
        if sampling and 1 < configuration["num_beams"] < configuration["n_gen"]:
            raise ConfigurationError("beam sampling returns at most num_beams answers: set num_beams >= n_gen, "
                                     "or num_beams 1 to sample n_gen answers independently")

    def preprocess(self, question: Question, history: list[Turn]) -> list[Row]:
        return self.encode(self.configuration["prefix"] + question.text, where=question.where)

    # ----- fine-tuning -----
    def training_rows(self, question: Question, history: list[Turn], reference: str) -> list[Row]:
        target = self.tokenizer(reference, max_length=self.configuration["max_target_length"], truncation=True)
        return [{**row, "labels": target["input_ids"]} for row in self.preprocess(question, history)]
