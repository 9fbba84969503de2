"""Eddy's services: a shared core and one package per service."""
