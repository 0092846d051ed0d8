# Names only this host knows (profiles, sandboxes) are asked of the sbox
# being completed (its word is kept in _sbox_cmd by _sbox), while completing.
(( $+functions[_sbox_names] )) ||
_sbox_names() { # [COMPADD-OPTIONS] KIND: offer the names of KIND (profiles, running, stored)
    local sbox=${_sbox_cmd:-sbox} kind=${@[-1]} expl
    set -- "${(@)@[1,-2]}"
    [[ $sbox == '~/'* ]] && sbox=$HOME/${sbox#\~/}
    local -a args names
    case $kind in
        profiles) args=(profile list --names) ;;
        running) args=(ps --names) ;;
        stored) args=(ps -a --names) ;;
        *) return 1 ;;
    esac
    names=(${(f)"$(command $sbox $args 2>/dev/null </dev/null)"})
    case $kind in
        profiles) _wanted profiles expl 'profile' compadd "$@" -a names ;;
        running) _wanted sandboxes expl 'running sandbox' compadd "$@" -a names ;;
        *) _wanted sandboxes expl 'sandbox' compadd "$@" -a names ;;
    esac
}

(( $+functions[_sbox_profiles] )) ||
_sbox_profiles() { # a profile: a name, or a path to a .toml file
    _alternative 'profiles:profile:_sbox_names profiles' 'files:profile file:_files'
}

