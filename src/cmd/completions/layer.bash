
# Names only this host knows (profiles, sandboxes) are asked of the sbox
# being completed, while completing; the rest is left to _sbox above.

@TABLES@

_sbox_names() { # SBOX KIND: the names of KIND (profiles, running, stored), one a line
    local sbox=$1
    [[ $sbox == "~/"* ]] && sbox=$HOME/${sbox#"~/"}
    case $2 in
        profiles) command "$sbox" profile list --names ;;
        running) command "$sbox" ps --names ;;
        stored) command "$sbox" ps -a --names ;;
    esac 2>/dev/null </dev/null
}

_sbox_complete() {
    # The words up to the cursor, split at blanks only (COMP_WORDS also
    # splits at '=' and ':').
    local line=${COMP_LINE:0:COMP_POINT}
    local -a words=()
    read -ra words <<<"$line"
    local cur=
    if [[ $line != *[[:space:]] ]] && ((${#words[@]} > 1)); then
        cur=${words[${#words[@]} - 1]}
        unset 'words[${#words[@]}-1]'
    fi
    local path= operands=0 ddash=0 pending= word
    for word in "${words[@]:1}"; do
        if [[ -n $pending ]]; then
            pending=
            continue
        fi
        if ((!ddash)); then
            case $word in
                --)
                    ddash=1
                    continue
                    ;;
                -*=*) continue ;;
                -*)
                    _sbox_value_opt "$path" "$word" && pending=$word
                    continue
                    ;;
            esac
        fi
        if ((!operands)) && _sbox_parent "$path"; then
            path=${path:+$path }$word
            continue
        fi
        operands=$((operands + 1))
    done

    local kind= value=$cur
    if [[ -n $pending ]]; then
        kind=$(_sbox_option_kind "$path" "$pending")
    elif ((!ddash)) && [[ $cur == --*=* ]]; then
        kind=$(_sbox_option_kind "$path" "${cur%%=*}")
        value=${cur#*=}
    elif ((!operands)) && [[ $cur != -* || $ddash == 1 ]] && ! _sbox_parent "$path"; then
        kind=$(_sbox_operand_kind "$path")
    fi
    if [[ -z $kind ]]; then
        _sbox "$@"
        return
    fi

    COMPREPLY=()
    # A profile can be a path to a .toml file too: those are left to the
    # file name completion (-o default).
    if [[ $kind == profiles && ($value == */* || $value == [.~]*) ]]; then
        return 0
    fi
    local name
    while IFS= read -r name; do
        [[ -n $name && $name == "$value"* ]] && COMPREPLY+=("$name")
    done < <(_sbox_names "${words[0]:-sbox}" "$kind")
    if [[ $kind != profiles ]]; then
        # No sandbox of that name: offer nothing rather than file names.
        compopt +o default +o bashdefault 2>/dev/null
    fi
    return 0
}

if [[ "${BASH_VERSINFO[0]}" -eq 4 && "${BASH_VERSINFO[1]}" -ge 4 || "${BASH_VERSINFO[0]}" -gt 4 ]]; then
    complete -F _sbox_complete -o nosort -o bashdefault -o default sbox
else
    complete -F _sbox_complete -o bashdefault -o default sbox
fi
