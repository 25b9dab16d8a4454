"""Compatibility with code written for fast-reid: the one list of its import paths and what each is here
(:mod:`fastreid.compat.api`). The config keys have their own table in :mod:`fastreid.config.fastreid_compat`."""
