"""Traced sentences into the warehouse's Arrow tables (schemas in ``schemas.tables``), one module
per stage: ``encoder`` (source tokens, encoder states), ``decoder`` (decoder states), ``attention``
(attention rows and columns), ``prediction`` (step tables' token, probability, top-k / rank),
``search`` (beam tree, search error); ``part`` puts a part together and blames wrong sentences;
``columns`` assembles Arrow tables from numpy blocks."""

from pipeline.records.part import PartBuilder, Traced, vocabulary

__all__ = ["PartBuilder", "Traced", "vocabulary"]
