"""The Redis layout every service agrees on.

Keys, hash writes, stream entries, Lua scripts, hiredis packing and the store itself.
"""
