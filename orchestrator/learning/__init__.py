"""The learning loop: logged decisions with matured rewards → policy versions, OPE, promotion."""
