/*
** version.h — the extension's version, the one place it is written
** (gpt2_version(), gpt2_info(), the release archive and the packages read it).
*/
#ifndef GPT2_VERSION_H
#define GPT2_VERSION_H

#define GPT2_VERSION "0.2.0"

#endif
